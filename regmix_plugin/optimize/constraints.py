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
from dataclasses import field
from pathlib import Path
from typing import TypedDict

import numpy as np

from regmix_plugin.config_schema import Choice, Number, config, either, read_yaml_file, validate, with_config
from regmix_plugin.errors import ConfigError
from regmix_plugin.data.token_counts import token_cap

_SAYS = "{value} must be {expect}"
Fraction = Number(ge=0, le=1, says=_SAYS)
TokenCount = Number(gt=0, expect="a positive number of tokens", says=_SAYS)
Epochs = Number(ge=0, says=_SAYS)


@with_config
class PriorPull(TypedDict, total=False):
    kind: Choice("kl", "entropy")
    strength: Number(ge=0, says=_SAYS)


@config(allowed="allowed keys are ")
class Constraints:
    min: dict[str, Fraction] = field(default_factory=dict)
    max: dict[str, Fraction] = field(default_factory=dict)
    fixed: dict[str, Fraction] = field(default_factory=dict)
    target_tokens: TokenCount | None = None
    max_epochs: either(Epochs, dict[str, Epochs]) = 1.0
    tokens: dict[str, Number(ge=0, says=_SAYS)] = field(default_factory=dict)
    prior_pull: PriorPull = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> "Constraints":
        if path is None:
            return cls()
        path = Path(path)
        doc = read_yaml_file(path, f"--constraints {path}")
        return validate(cls, {} if doc is None else doc, f"--constraints {path}")

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
            d = bad[0]
            i = names.index(d)
            # name the rule that set the upper bound: a token cap comes from max_epochs and tokens, not from max
            why = {"token cap": " (its token cap: tokens x max_epochs / target_tokens)"}.get(source.get(d), "")
            raise ConfigError(f"min.{d}: lower bound {lo[i]:.4g} exceeds its upper bound {hi[i]:.4g}{why}; loosen one")
        if lo.sum() > 1 + 1e-9:
            raise ConfigError(f"min/fixed: the lower bounds sum to {lo.sum():.4g} > 1; no mixture satisfies them; lower some")
        if hi.sum() < 1 - 1e-9:
            raise ConfigError(f"max/token caps: the upper bounds sum to {hi.sum():.4g} < 1; no mixture satisfies them; raise max_epochs or some max")
        return lo, hi, source

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ({}, None)}
