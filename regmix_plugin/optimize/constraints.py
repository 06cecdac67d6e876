"""Constraints on the chosen mixture, read from a YAML file and turned into per-domain bounds.

Example ``C.yaml``::

    min: {pile_cc: 0.1}            # per-domain lower bounds
    max: {github: 0.2}             # per-domain upper bounds
    fixed: {wikipedia_en: 0.05}    # exact weights
    target_tokens: 1.0e11          # token budget of the large run (enables token caps)
    max_epochs: 4                  # repeat each domain at most this often (a number, or {domain: n})
    tokens: {pile_cc: 2.0e10}      # available tokens per domain (else the base mixture's `tokens`)
    prior_pull: {kind: kl, strength: 0.01}   # optional pull toward the prior (kl | entropy)

Token cap of a domain = available tokens x max epochs / target tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from regmix_plugin.errors import ConfigError
from regmix_plugin.sweep.mixtures import token_cap

_KEYS = {"min", "max", "fixed", "target_tokens", "max_epochs", "tokens", "prior_pull"}


@dataclass
class Constraints:
    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)
    fixed: dict[str, float] = field(default_factory=dict)
    target_tokens: float | None = None
    max_epochs: float | dict[str, float] = 1.0
    tokens: dict[str, float] = field(default_factory=dict)
    prior_pull: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("min", "max", "fixed"):
            for d, v in getattr(self, key).items():
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                    raise ConfigError(f"{key}.{d}: {v!r} must be a number in [0, 1]")
        if self.target_tokens is not None and not (isinstance(self.target_tokens, (int, float)) and self.target_tokens > 0):
            raise ConfigError(f"target_tokens: {self.target_tokens!r} must be a positive number of tokens")
        if self.prior_pull:
            kind = self.prior_pull.get("kind", "kl")
            if kind not in ("kl", "entropy"):
                raise ConfigError(f"prior_pull.kind: unknown value {kind!r}; choose one of kl, entropy")
            s = self.prior_pull.get("strength", 0.0)
            if not isinstance(s, (int, float)) or s < 0:
                raise ConfigError(f"prior_pull.strength: {s!r} must be a number >= 0")

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> "Constraints":
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--constraints {path}: file not found; check the path")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--constraints {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"--constraints {path}: expected a mapping with keys {', '.join(sorted(_KEYS))}")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise ConfigError(f"--constraints {path}: {unknown[0]}: unknown key; allowed keys are {', '.join(sorted(_KEYS))}")
        try:
            return cls(**doc)
        except ConfigError as e:
            raise ConfigError(f"--constraints {path}: {e}") from None

    def named_for(self, names: list[str]) -> "Constraints":
        """A copy whose per-domain keys are the model's domain names: a domain may also be named as a source
        file spells its weight column (``train_the_pile_pile_cc``, ``weight/pile_cc``). Unknown domains in
        min/max/fixed/max_epochs are a one-line error; unknown ones under ``tokens`` are left (unused)."""
        from dataclasses import replace

        from regmix_plugin.table import resolve_domain

        def keyed(key: str, values: dict, strict: bool = True) -> dict:
            out = {}
            for d, v in values.items():
                name = resolve_domain(str(d), names)
                if name is None and strict:
                    raise ConfigError(f"{key}.{d}: no such domain; domains are {', '.join(names)}")
                out[name or d] = v
            return out

        epochs = keyed("max_epochs", self.max_epochs) if isinstance(self.max_epochs, dict) else self.max_epochs
        return replace(self, min=keyed("min", self.min), max=keyed("max", self.max), fixed=keyed("fixed", self.fixed),
                       max_epochs=epochs, tokens=keyed("tokens", self.tokens, strict=False))

    def bounds(self, names: list[str], tokens: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """Per-domain ``(lo, hi)`` and, per domain, which rule set its upper bound (for the report)."""
        for key in ("min", "max", "fixed"):
            for d in getattr(self, key):
                if d not in names:
                    raise ConfigError(f"{key}.{d}: no such domain; domains are {', '.join(names)}")
        lo = np.array([self.min.get(d, 0.0) for d in names], dtype=float)
        hi = np.array([self.max.get(d, 1.0) for d in names], dtype=float)
        source = {d: "max" for d in self.max}
        if self.target_tokens is not None:
            avail = {**(tokens or {}), **self.tokens}
            for i, d in enumerate(names):
                if d not in avail:
                    raise ConfigError(f"tokens.{d}: unknown available tokens; give it in the YAML or a --base-mixture with tokens")
                epochs = self.max_epochs.get(d, 1.0) if isinstance(self.max_epochs, dict) else self.max_epochs
                cap = token_cap(float(avail[d]), float(epochs), float(self.target_tokens))
                if cap < hi[i]:
                    hi[i], source[d] = cap, "token cap"
        for i, d in enumerate(names):
            if d in self.fixed:
                lo[i] = hi[i] = self.fixed[d]
                source[d] = "fixed"
        bad = [names[i] for i in range(len(names)) if lo[i] > hi[i] + 1e-12]
        if bad:
            raise ConfigError(f"min.{bad[0]}: lower bound {lo[names.index(bad[0])]:.4g} exceeds its upper bound {hi[names.index(bad[0])]:.4g}; loosen one")
        if lo.sum() > 1 + 1e-9:
            raise ConfigError(f"min/fixed: the lower bounds sum to {lo.sum():.4g} > 1; no mixture satisfies them; lower some")
        if hi.sum() < 1 - 1e-9:
            raise ConfigError(f"max/token caps: the upper bounds sum to {hi.sum():.4g} < 1; no mixture satisfies them; raise max_epochs or some max")
        return lo, hi, source

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ({}, None)}
