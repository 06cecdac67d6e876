"""The sampler's settings (the ``synthesize:`` block of a study), apart from the sampler.

`regmix synthesize` gives every scalar setting a flag of its own, read from this class; every `regmix`
invocation builds the whole parser, so this module imports nothing heavy (no numpy, scipy or pandas).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, field
from typing import Any

from regmix_plugin.config_schema import Choice, Number, Text, config, either, validate
from regmix_plugin.errors import ConfigError

PRIOR_SOURCES = ("auto", "tokens", "idx", "weights", "uniform")
SAMPLERS = ("dirichlet", "sobol")
PHASE_MODES = ("independent", "anchored")
# Settings of multi-phase synthesis: left out of the digest while no phases are asked for, so a folder
# synthesized before they existed keeps its digest (a sweep resumes it).
PHASE_FIELDS = ("phases", "phase_mode", "anchor_strength")


_SAYS = "{value} must be {bound}"


@config(prefix="synthesize")
class SynthConfig:
    """Every knob of the sampler. Defaults are RegMix's, except ``n``/``heldout``."""

    n: Number(integer=True, ge=1, says=_SAYS) = 64  # proxy mixtures to write (n0001.json ...)
    # extra mixtures written to heldout/ (h0001.json ...) for honest predictor evaluation
    heldout: Number(integer=True, ge=0, says=_SAYS) = 8
    seed: Number(integer=True) = 42
    prior: Choice(*PRIOR_SOURCES) = "auto"  # auto | tokens (mixture's tokens fields) | idx (.idx files) | weights | uniform
    prior_weights: dict[str, Number(ge=0, says=_SAYS)] | None = None  # explicit prior {domain: share}; overrides `prior`
    # prior ** temperature; 1 keeps the token shares, 0 makes the prior uniform
    temperature: Number(ge=0, says=_SAYS) = 0.5
    min_strength: Number() = 0.1  # Dirichlet concentration = strength * prior, strengths log-spaced in [min, max]
    max_strength: Number() = 5.0
    num_strengths: Number(integer=True, ge=1, says=_SAYS) = 15
    # reject weight_d > max_usage * token share_d (untempered); None: no bound
    max_usage: Number(gt=0, says=_SAYS + " (or null for no bound)") | None = 15.0
    # weights below are zeroed; weights are multiples of it (1/minimum must be an integer)
    minimum: Number(gt=0, lt=1, says="{value} must be in (0, 1), e.g. 2e-4") = 2e-4
    min_weight: Number(ge=0, lt=1, says="{value} must be in [0, 1)") = 0.0  # floor for every domain's weight
    # domains (or "all") guaranteed >= minimum
    nonzero: either(Choice("all"), list[Text]) = field(default_factory=list)
    sampler: Choice(*SAMPLERS) = "dirichlet"  # dirichlet (i.i.d., RegMix) | sobol (scrambled Sobol, space-filling)
    # tokens of the large run (e.g. 2.5e10); enables availability caps
    target_tokens: Number(gt=0, says="{value} must be a positive token count (or null)") | None = None
    # with target_tokens: weight_d <= tokens_d * max_epochs / target_tokens
    max_epochs: Number(gt=0, says=_SAYS) = 4.0
    max_candidates: Number(integer=True) | None = None  # draws before giving up; default 100 * (n + heldout) as in RegMix
    # Multi-phase schedules (docs/phases.md): where phases 1.. begin, as increasing fractions of training in
    # (0, 1) (`--phases 0.8`: 80 % then 20 %); empty: single mixtures.
    phases: list[Number(gt=0, lt=1, says="{value} must be a fraction of training in (0, 1), e.g. 0.8")] = \
        field(default_factory=list)
    # independent: every phase its own Dirichlet around the prior (RegMix's draw per phase); anchored: phase 0
    # around the prior, each later phase around the one before (Dir(anchor_strength * D * previous))
    phase_mode: Choice(*PHASE_MODES) = "independent"
    anchor_strength: Number(gt=0, says=_SAYS) = 5.0  # anchored: larger keeps later phases closer to the earlier

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(0 < self.min_strength <= self.max_strength,
             f"synthesize.min_strength/max_strength: need 0 < min_strength <= max_strength, got "
             f"{self.min_strength}, {self.max_strength}")
        units = round(1 / self.minimum)
        need(abs(units * self.minimum - 1) < 1e-9,
             f"synthesize.minimum: 1/{self.minimum} is not an integer; use e.g. 1e-3, 2e-4 or 1e-4")
        need(self.min_weight == 0 or self.min_weight >= self.minimum,
             f"synthesize.min_weight: {self.min_weight} is below minimum ({self.minimum}), which would zero it; "
             "use 0 or a value >= minimum")
        need(self.max_candidates is None or self.max_candidates >= self.n + self.heldout,
             f"synthesize.max_candidates: {self.max_candidates} is below n + heldout")
        need(self.prior_weights is None or len(self.prior_weights) > 0,
             "synthesize.prior_weights: expected a {domain: share} mapping")
        for a, b in zip(self.phases, self.phases[1:]):
            need(b > a, f"synthesize.phases: {list(self.phases)} are not increasing; give the boundaries in order, "
                        "e.g. 0.5,0.8")
        need(not self.phases or self.sampler == "dirichlet",
             "synthesize.sampler: phases are drawn by Dirichlet per phase; use sampler: dirichlet with phases")

    @classmethod
    def from_dict(cls, data: Any, where: str = "synthesize") -> "SynthConfig":
        """The ``synthesize:`` block of a study (or a ``--config`` file of sampler settings)."""
        return validate(cls, data, prefix=where)

    def digest(self) -> str:
        d = asdict(self)
        if not self.phases:
            for k in PHASE_FIELDS:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
