"""The reuse plan file (``plan.json``, Olmix's mixture reuse): the frozen ratios and the two maps between the
reduced simplex and the real domains.

Written by ``regmix reuse plan`` (`regmix_plugin.reuse.plan` builds it), read by a sweep whose study says
``reuse: plan.json`` (each reduced mixture is expanded to the real domains before a run sees it) and by
``regmix reuse runs`` / ``regmix reuse expand``. A shared module because two stages read it: the sweep, and
the reuse stage that also writes the sweep's study (an arrow each way if it lived in either).

A plan folder holds ``plan.json``, ``full_base.json`` (every real domain, absolute prefixes, token counts) and
``base.json`` (the reduced base: the frozen group as one domain, then the free domains).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from regmix_plugin import __version__
from regmix_plugin.config_schema import Number, Text, config, validate
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json, read_json_file
from regmix_plugin.mixture import Mixture

PLAN_FILE = "plan.json"
FULL_BASE_FILE = "full_base.json"
REDUCED_BASE_FILE = "base.json"
# How far (in weight) an old run's untouched domains may sit from the frozen ratios and still count as a
# point of the reduced simplex: twice the rounding quantum of synthesized mixtures (2e-4) and then some.
DEFAULT_TOLERANCE = 1e-3


class ReuseError(RegmixError):
    pass


_FILE_HEADER = ("version", "tool", "regmix_version")  # written by to_dict, checked by load before the fields


@config(error=ReuseError)
class ReusePlan:
    frozen_name: Text
    frozen: dict[str, Number(ge=0, le=1)]  # untouched domain -> its share of the frozen group (sums to 1)
    free: list[Text]  # the reduced domains besides the frozen group, in full-base order
    added: list[Text]
    updated: list[Text]
    removed: list[Text]
    old_mixture: dict[str, Any]  # path, name, hash, weights, provenance (the fields that say where it came from)
    old_runs: dict[str, Any] | None = None  # path, sha256, rows
    notes: list[Text] = field(default_factory=list)
    full_base_file: Text = FULL_BASE_FILE
    reduced_base_file: Text = REDUCED_BASE_FILE
    folder: Path | None = field(default=None, repr=False, compare=False, init=False)  # where plan.json lies

    # ---- views ---------------------------------------------------------------------------------
    @property
    def reduced_names(self) -> list[str]:
        return [self.frozen_name, *self.free]

    def full_base(self) -> Mixture:
        return Mixture.load(self._path(self.full_base_file))

    def reduced_base(self) -> Mixture:
        return Mixture.load(self._path(self.reduced_base_file))

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise ReuseError("reuse plan: not saved yet, so its base files have no folder")
        return self.folder / name

    def summary(self) -> dict[str, Any]:
        """What a reused regmix.json records about where it came from."""
        return {"plan": str(self._path(PLAN_FILE)), "frozen_name": self.frozen_name, "frozen": dict(self.frozen),
                "free": list(self.free), "added": list(self.added), "updated": list(self.updated),
                "removed": list(self.removed), "old_mixture": dict(self.old_mixture), "old_runs": self.old_runs,
                "notes": list(self.notes)}

    # ---- the two maps --------------------------------------------------------------------------
    def expand(self, reduced: Mixture, name: str | None = None) -> Mixture:
        """The full mixture of a reduced one: untouched domains share the frozen weight in the old ratios."""
        if sorted(reduced.names) != sorted(self.reduced_names):
            raise ReuseError(f"{reduced.name}: domains {', '.join(reduced.names)} are not the plan's reduced "
                             f"domains {', '.join(self.reduced_names)}; give a mixture over the plan's base.json")
        full = self.full_base()
        r = {d.name: d.weight for d in reduced.domains}
        weights = {n: (r[self.frozen_name] * self.frozen[n] if n in self.frozen else r[n]) for n in full.names}
        mix = Mixture.from_weights(weights, template=full, name=name or reduced.name)
        mix.normalization = {}  # the weights sum to 1 up to rounding; no "normalised from" note
        return mix

    def reduce(self, weights: dict[str, float], old: bool, tolerance: float = DEFAULT_TOLERANCE
               ) -> tuple[dict[str, float] | None, str]:
        """Reduced weights of a run's full weights, or ``(None, why not)``.

        ``old``: the run trained on the old data, so an updated or removed domain must have had weight 0 in
        it, and an added domain did not exist (weight 0). A new run must name every domain of the plan.
        """
        w = {k: float(v) for k, v in weights.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if old:
            stale = [n for n in self.updated + self.removed if w.get(n, 0.0) > 0]
            if stale:
                kind = "updated" if stale[0] in self.updated else "removed"
                return None, f"trained on the old data of {kind} domain {stale[0]}"
            extra = sorted(set(w) - set(self.frozen) - set(self.free) - set(self.removed))
            if extra:
                return None, f"has domain {extra[0]}, which the old mixture did not"
        else:
            missing = [n for n in list(self.frozen) + self.free if n not in w]
            if missing:
                return None, f"has no weight for {missing[0]}"
        total = sum(w.get(n, 0.0) for n in list(self.frozen) + self.free)
        if total <= 0:
            return None, "has no weight on any domain of the plan"
        group = sum(w.get(n, 0.0) for n in self.frozen)
        off = max(abs(w.get(n, 0.0) - group * ratio) for n, ratio in self.frozen.items())
        if off > tolerance:
            return None, f"its untouched domains are not in the frozen ratios (off by {off:.3g} > {tolerance:g})"
        out = {self.frozen_name: group / total}
        out.update({n: w.get(n, 0.0) / total for n in self.free})
        return out, ""

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("folder", None)
        return {"version": 1, "tool": "regmix reuse plan", "regmix_version": __version__, **d}

    def save(self, folder: str | os.PathLike) -> Path:
        self.folder = Path(folder).resolve()
        return atomic_write_json(self.folder / PLAN_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReusePlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        data = read_json_file(path, ReuseError, str(path), "reuse plan", "write one with `regmix reuse plan`")
        if not isinstance(data, dict) or data.get("tool") != "regmix reuse plan" or data.get("version") != 1:
            raise ReuseError(f"{path}: not a reuse plan (tool/version); write one with `regmix reuse plan`")
        plan = validate(cls, {k: v for k, v in data.items() if k not in _FILE_HEADER}, str(path))
        if abs(sum(plan.frozen.values()) - 1) > 1e-9 or not plan.free:
            raise ReuseError(f"{path}: frozen ratios must sum to 1 and free must list a domain; rewrite the plan")
        plan.folder = path.resolve().parent
        return plan


def load_plan(path: str | os.PathLike) -> ReusePlan:
    return ReusePlan.load(path)
