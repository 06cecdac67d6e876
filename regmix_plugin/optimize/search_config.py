"""The optimiser's settings and search modes, apart from the search itself.

`regmix optimize` offers ``MODES`` as its ``--mode`` choices; every `regmix` invocation builds the whole
parser, so this module imports nothing heavy (no numpy, no fitted predictors).
"""

from __future__ import annotations

from dataclasses import dataclass

from regmix_plugin.errors import ConfigError

MODES = ("sample", "exact", "auto")


@dataclass
class SearchConfig:
    mode: str = "auto"  # auto: exact when the predictor is smooth, else sample
    n_samples: int = 100_000
    top_k: int = 128
    n_starts: int = 1  # more starts guard non-convex predictors (GP, stacks); the laws need one
    start_pool: int = 256  # exact mode: Dirichlet samples screened for starting points
    slsqp_max_domains: int = 200
    max_iter: int = 300
    strengths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)  # Dirichlet concentration multipliers of the prior
    seed: int = 0
    pull_kind: str = "kl"
    pull_strength: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode: unknown value {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.n_starts < 1:
            raise ConfigError(f"--starts: {self.n_starts} must be >= 1")
        if self.n_samples < 1 or self.top_k < 1 or self.top_k > self.n_samples:
            raise ConfigError(f"--top-k: {self.top_k} must be between 1 and --samples ({self.n_samples})")
