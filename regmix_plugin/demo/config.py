"""Settings of `regmix demo`: sizes chosen so the whole loop runs in about 15 minutes on 2 cores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from regmix_plugin.errors import ConfigError, check_choice

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "megatron_configs"
TARGETS = ("eval", "train-mean")


@dataclass
class DemoConfig:
    out: Path
    # Proxy mixtures the regression is fitted on. 32, not 48: refitted on the first 32 of 48 runs, the predictor
    # ranked the 8 held-out mixtures as well as with all 48 (bench/demo_proxies.py, BENCHMARKS.md, DECISIONS 50).
    proxies: int = 32
    heldout: int = 8  # extra proxy mixtures never fitted on: an honest check of the predictor
    workers: int = 2  # proxy/target runs at once (one per core)
    seed: int = 0
    valid_fraction: float = 0.05
    proxy_config: Path = CONFIG_DIR / "demo-proxy-cpu.yaml"
    target_config: Path = CONFIG_DIR / "demo-target-cpu.yaml"
    # 5 (DECISIONS 66): a paired test needs at least 3; with 5 it needs a gain of 2.8 standard errors, not 4.3.
    target_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    predictor: str = "auto"
    domains: list[str] | None = None  # None: every demo source present on this machine
    # What the demo minimises (docs/DECISIONS.md 49): "eval", the mean loss on evaluation sets that are not
    # training domains; "train-mean", the mean of the training domains' own validation losses (the old target,
    # for which the token-proportional mixture is near-optimal by construction).
    target: str = "eval"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.proxies < 8:
            raise ConfigError(f"--proxies: {self.proxies} is too few to fit a regression; give at least 8")
        if self.heldout < 0:
            raise ConfigError(f"--heldout: {self.heldout} is negative; give 0 or more")
        if self.workers < 1:
            raise ConfigError(f"--workers: {self.workers} must be at least 1")
        if not 0 < self.valid_fraction < 0.5:
            raise ConfigError(f"--valid-fraction: {self.valid_fraction} is out of range; give a value in (0, 0.5)")
        if not self.target_seeds:
            raise ConfigError("--target-seeds: give at least one seed")
        if len(set(self.target_seeds)) != len(self.target_seeds):
            raise ConfigError(f"--target-seeds: {self.target_seeds} repeats a seed; give distinct seeds, e.g. 1,2,3")
        check_choice("--target", self.target, TARGETS)
        for name in ("proxy_config", "target_config"):
            p = Path(getattr(self, name))
            if not p.is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: {p} not found; give a proxy config YAML")
            setattr(self, name, p.resolve())
