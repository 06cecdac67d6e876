"""Continual pretraining: how much original data to replay (Data Mixing Laws, arXiv 2403.16952, sec. 5).

A base model was trained on the *original* mixture; continual training moves it to *new* data. Mixing a
proportion ``p`` of original data back in (replay) trades new-domain progress for old-domain forgetting.
Following Data Mixing Laws, both losses follow a 1-D mixing law in ``p``:

    L_old(p) = c + k * exp(t * p)   (t < 0: more replay, less forgetting)
    L_new(p) = c' + k' * exp(t' * p)

fitted on a few continual runs (robust Huber fit from `regmix_plugin.laws`). The *critical
proportion* is the least ``p`` whose predicted old-domain loss stays at or below the base checkpoint's
(plus a tolerance the user chooses); we report it with the predicted new-domain loss there.

The continual mixture at ``p`` is ``p * original + (1 - p) * new`` over the union of their domains; the
"old loss" of a run is its per-domain validation loss averaged with the original mixture's weights, the
"new loss" likewise with the new mixture's weights. :func:`write_sweep` writes the mixtures for a grid
of ``p`` and a plan file (``continual.json``) that `regmix continual fit` reads back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from regmix_plugin.config_schema import Number, Text, config, validate
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.io import atomic_write_json, read_json_file
from regmix_plugin.laws.saturating import LawConfig, LawParams, clean_series, fit_laws
from regmix_plugin.mixture import Domain, Mixture
from regmix_plugin.collect.curves import read_eval_curve
from regmix_plugin.table import loss_column, weight_column

PLAN_FILE = "continual.json"
STUDY_FILE = "study.yaml"
DEFAULT_GRID = (0.0, 0.2, 0.4, 0.6, 0.8)


class ContinualError(RegmixError):
    pass


@dataclass
class ContinualSpec:
    """The two mixtures being blended; weights are normalised over each mixture's own domains."""

    original: dict[str, float]
    new: dict[str, float]

    def __post_init__(self) -> None:
        for name, w in (("original", self.original), ("new", self.new)):
            total = sum(w.values())
            if not w or total <= 0:
                raise ConfigError(f"{name}: the mixture has no domain with weight > 0; give a mixture to train on")
            setattr(self, name, {d: v / total for d, v in w.items() if v > 0})
        if self.original == self.new:
            raise ConfigError("new: the new-data mixture equals the original one; continual training needs new data")

    @property
    def domains(self) -> list[str]:
        return list(dict.fromkeys([*self.original, *self.new]))

    def weights_at(self, p: float) -> dict[str, float]:
        """The continual mixture with replay proportion ``p`` (share of original data)."""
        if not 0 <= p <= 1:
            raise ConfigError(f"proportion: {p} is outside [0, 1]; p is the share of original (replay) data")
        return {d: p * self.original.get(d, 0.0) + (1 - p) * self.new.get(d, 0.0) for d in self.domains}

    def proportion_of(self, weights: Mapping[str, float]) -> float:
        """The ``p`` whose blend is closest (least squares) to ``weights``; exact for mixtures from :meth:`weights_at`."""
        doms = self.domains
        w = np.array([weights.get(d, 0.0) for d in doms], float)
        w = w / w.sum()
        o = np.array([self.original.get(d, 0.0) for d in doms])
        n = np.array([self.new.get(d, 0.0) for d in doms])
        return float(np.clip(np.dot(w - n, o - n) / np.dot(o - n, o - n), 0.0, 1.0))

    def old_loss(self, losses: Mapping[str, float]) -> float:
        return _weighted(self.original, losses, "original")

    def new_loss(self, losses: Mapping[str, float]) -> float:
        return _weighted(self.new, losses, "new")

    @classmethod
    def from_mixtures(cls, original: Mixture, new: Mixture) -> "ContinualSpec":
        return cls(dict(zip(original.names, original.weights)), dict(zip(new.names, new.weights)))


def _weighted(weights: Mapping[str, float], losses: Mapping[str, float], which: str) -> float:
    missing = [d for d in weights if d not in losses or not math.isfinite(losses[d])]
    if missing:
        raise ContinualError(
            f"valid/{missing[0]}/loss: no finite value; the {which} domains must all be evaluated "
            "(keep weight-0 domains in the mixture so the trainer evaluates them)"
        )
    return float(sum(w * losses[d] for d, w in weights.items()))


# ---- the fit -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpLaw:
    """``L(p) = c + k * exp(t * p)`` with c, k > 0."""

    c: float
    k: float
    t: float

    @classmethod
    def from_params(cls, p: LawParams) -> "ExpLaw":
        return cls(c=math.exp(p.e), k=math.exp(p.beta), t=p.gamma)

    def predict(self, p) -> np.ndarray:
        return self.c + self.k * np.exp(self.t * np.asarray(p, dtype=float))

    def to_dict(self) -> dict[str, float]:
        return {"c": self.c, "k": self.k, "t": self.t}


@dataclass
class ContinualFitConfig:
    """tolerance: allowed rise of the old-domain loss over the base checkpoint's, in nats (>= 0).
    safety: how many residual standard deviations of the old-domain fit to keep below the target, so
        that run-to-run noise does not push the real loss over it (0 = the point estimate).
    grid_points: resolution of the search for the critical proportion on [0, 1]."""

    tolerance: float = 0.0
    safety: float = 1.0
    grid_points: int = 10001
    law: LawConfig = field(default_factory=lambda: LawConfig(min_points=3))

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ConfigError(f"tolerance: {self.tolerance} must be a finite number >= 0 (nats of old-domain loss)")
        if not (self.safety >= 0 and math.isfinite(self.safety)):
            raise ConfigError(f"safety: {self.safety} must be a finite number >= 0 (residual standard deviations)")
        if self.grid_points < 11:
            raise ConfigError(f"grid_points: {self.grid_points} must be >= 11")


@dataclass
class ContinualResult:
    points: pd.DataFrame  # proportion, old_loss, new_loss (one row per continual run)
    base_old_loss: float
    tolerance: float
    old_law: ExpLaw
    new_law: ExpLaw
    critical_proportion: float | None  # None: no p in [0, 1] keeps the old loss within the tolerance
    new_loss_at_critical: float | None
    old_residual_sd: float = 0.0  # of the old-domain fit, sqrt(SSR / (n - 3)) (RMS when n == 3)
    safety: float = 0.0  # the critical proportion keeps the predicted old loss safety * sd below the target

    @property
    def target(self) -> float:
        return self.base_old_loss + self.tolerance

    def summary(self) -> str:
        head = (f"base old-domain loss {self.base_old_loss:.4f}, tolerance {self.tolerance:g} -> target {self.target:.4f}"
                f" (safety margin {self.safety:g} x fit residual sd {self.old_residual_sd:.4f})")
        if self.critical_proportion is None:
            return (f"{head}; no replay proportion in [0, 1] keeps the old-domain loss within the target "
                    f"(predicted {float(self.old_law.predict(1.0)):.4f} at p=1): raise the tolerance or train less")
        return (f"{head}; critical replay proportion p* = {self.critical_proportion:.3f} "
                f"(predicted old loss {float(self.old_law.predict(self.critical_proportion)):.4f}, "
                f"new loss {self.new_loss_at_critical:.4f})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_old_loss": self.base_old_loss,
            "tolerance": self.tolerance,
            "target_old_loss": self.target,
            "critical_proportion": self.critical_proportion,
            "new_loss_at_critical": self.new_loss_at_critical,
            "old_residual_sd": self.old_residual_sd,
            "safety": self.safety,
            "old_law": self.old_law.to_dict(),
            "new_law": self.new_law.to_dict(),
            "points": self.points.to_dict(orient="records"),
        }


def fit_continual(points: pd.DataFrame, base_old_loss: float, config: ContinualFitConfig) -> ContinualResult:
    """Fit the old/new laws on ``points`` (columns proportion, old_loss, new_loss) and find p*."""
    for col in ("proportion", "old_loss", "new_loss"):
        if col not in points.columns:
            raise ContinualError(f"points: no {col!r} column; give one row per continual run")
    if not (math.isfinite(base_old_loss) and base_old_loss > 0):
        raise ConfigError(f"base_old_loss: {base_old_loss} must be a positive finite loss")
    p = points["proportion"].to_numpy(float)
    if len(np.unique(p[np.isfinite(p)])) < 3:
        raise ContinualError(
            f"proportions: {sorted(set(p.tolist()))} has fewer than 3 distinct values; the 1-D law has 3 "
            "parameters, so run at least 3 proportions"
        )
    laws = []
    for col in ("old_loss", "new_loss"):
        z, y = clean_series(p, points[col].to_numpy(float), col, config.law.min_points)
        # The law can rise or fall with p: gamma (t) is unbounded.
        laws.append(ExpLaw.from_params(fit_laws([(z, y)], config.law, gamma_bounds=(None, None))[0]))
    old_law, new_law = laws
    z, y = clean_series(p, points["old_loss"].to_numpy(float), "old_loss", config.law.min_points)
    ssr = float(np.sum((old_law.predict(z) - y) ** 2))
    sd = math.sqrt(ssr / max(len(y) - 3, 1))
    grid = np.linspace(0.0, 1.0, config.grid_points)
    ok = old_law.predict(grid) + config.safety * sd <= base_old_loss + config.tolerance
    crit = float(grid[np.argmax(ok)]) if ok.any() else None
    return ContinualResult(
        points=points[["proportion", "old_loss", "new_loss"]].reset_index(drop=True),
        base_old_loss=float(base_old_loss),
        tolerance=config.tolerance,
        old_law=old_law,
        new_law=new_law,
        critical_proportion=crit,
        new_loss_at_critical=None if crit is None else float(new_law.predict(crit)),
        old_residual_sd=sd,
        safety=config.safety,
    )


def final_losses(run_dir: str | os.PathLike) -> dict[str, float]:
    """Per-domain validation losses at the last eval of a run."""
    curve = read_eval_curve(run_dir)
    last = curve.iloc[-1]
    return {c.split("/")[1]: float(last[c]) for c in curve.columns if c.startswith("valid/") and c.endswith("/loss")}


def points_from_table(df: pd.DataFrame, spec: ContinualSpec) -> pd.DataFrame:
    """One (proportion, old_loss, new_loss) row per completed run of a runs table."""
    if "status" in df.columns:
        df = df[df["status"].isin(["completed", "imported"])]
    rows = []
    for _, r in df.iterrows():
        weights = {d: float(r.get(weight_column(d), 0.0)) for d in spec.domains}
        losses = {d: float(r[loss_column(d)]) for d in spec.domains if loss_column(d) in r.index}
        rows.append({"run_id": str(r["run_id"]), "proportion": spec.proportion_of(weights),
                     "old_loss": spec.old_loss(losses), "new_loss": spec.new_loss(losses)})
    if not rows:
        raise ContinualError("runs table: no completed run; wait for the continual sweep or check its status column")
    return pd.DataFrame(rows)


# ---- the sweep -----------------------------------------------------------------------------------------

@config(error=ContinualError)
class ContinualPlan:
    """What `regmix continual sweep` wrote, read back by `regmix continual fit` (``continual.json``)."""

    original_mixture: Text
    new_mixture: Text
    base_ckpt: Text
    proportions: list[Number(ge=0, le=1)]
    mixtures: list[Text]  # one file per proportion, relative to the plan's folder
    base_run: Text | None = None

    def __post_init__(self) -> None:
        if len(self.mixtures) != len(self.proportions):
            raise ContinualError("mixtures: one mixture file per proportion is needed")

    def spec(self, base_dir: str | os.PathLike) -> ContinualSpec:
        return ContinualSpec.from_mixtures(
            Mixture.load(_rel(base_dir, self.original_mixture)), Mixture.load(_rel(base_dir, self.new_mixture))
        )

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, {"version": 1, **dataclasses.asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ContinualPlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        data = read_json_file(path, ContinualError, f"--plan {path}", "continual plan",
                              "write it with `regmix continual sweep`")
        if not isinstance(data, dict) or data.pop("version", 1) != 1:
            raise ContinualError(f"--plan {path}: not a version 1 plan; rewrite it with `regmix continual sweep`")
        return validate(cls, data, f"--plan {path}")


def _rel(base_dir, p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(base_dir, p)


def check_grid(proportions: Sequence[float]) -> list[float]:
    grid = sorted({round(float(p), 6) for p in proportions})
    if len(grid) < 3:
        raise ConfigError(f"--proportions: {list(proportions)} has fewer than 3 distinct values; the law needs 3")
    bad = [p for p in grid if not 0 <= p <= 1]
    if bad:
        raise ConfigError(f"--proportions: {bad[0]} is outside [0, 1]; give shares of original data")
    return grid


def continual_mixture(original: Mixture, new: Mixture, p: float) -> Mixture:
    """The blend at replay proportion ``p``, with prefixes taken from whichever mixture has the domain.

    Relative prefixes are made absolute, so the new file works wherever it is written.
    """
    spec = ContinualSpec.from_mixtures(original, new)
    by_name: dict[str, tuple[Domain, Mixture]] = {}
    for mix in (new, original):  # the original's description of a shared domain wins
        for d in mix.domains:
            by_name[d.name] = (d, mix)
    weights = spec.weights_at(p)
    domains = []
    for name in list(dict.fromkeys([*original.names, *new.names])):
        d, mix = by_name[name]
        domains.append(Domain(
            name=name, weight=weights.get(name, 0.0),
            prefixes=[mix.resolve(x) for x in d.prefixes], tokens=d.tokens,
            valid_prefixes=[mix.resolve(x) for x in d.valid_prefixes],
            test_prefixes=[mix.resolve(x) for x in d.test_prefixes],
        ))
    out = Mixture(domains=domains, name=f"continual-p{p:.3f}")
    return out.with_provenance(tool="regmix continual sweep", continual_proportion=p,
                               original=original.name, new=new.name)


@dataclass
class SweepConfig:
    """The continual sweep: the proportion grid and how the study YAML launches it.

    proxy_config: the trainer config for the continual runs (its steps are the continual-training length).
    backend, max_concurrent, slurm: copied into the study YAML (see `regmix_plugin.sweep.study`).
    """

    proxy_config: str
    proportions: Sequence[float] = DEFAULT_GRID
    backend: str = "local"
    max_concurrent: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=lambda: {"OMP_NUM_THREADS": "1"})
    name: str = "continual"

    def __post_init__(self) -> None:
        self.proportions = check_grid(self.proportions)
        if self.backend not in ("local", "slurm"):
            raise ConfigError(f"backend: unknown value {self.backend!r}; choose one of local, slurm")
        if self.max_concurrent < 1:
            raise ConfigError(f"max_concurrent: {self.max_concurrent} must be >= 1")
        if not os.path.isfile(self.proxy_config):
            raise ConfigError(f"--config: {self.proxy_config} not found; give the proxy trainer's YAML")


def write_sweep(original_path: str, new_path: str, base_ckpt: str, out_dir: str | os.PathLike,
                config: SweepConfig, base_run: str | None = None) -> ContinualPlan:
    """Write ``OUT/mixtures/p0.200.json``…, ``OUT/continual.json`` and ``OUT/study.yaml``; return the plan.

    ``regmix sweep OUT/study.yaml`` then runs every mixture from the base checkpoint (local or Slurm) into
    ``OUT/runs/<p…>/``, and ``regmix continual fit --plan OUT`` fits the result.
    """
    if not os.path.exists(base_ckpt):
        raise ConfigError(f"--base-ckpt: {base_ckpt} does not exist; give the base run's checkpoint folder")
    original, new = Mixture.load(original_path), Mixture.load(new_path)
    out_dir = Path(out_dir)
    files = []
    for p in config.proportions:
        rel = f"mixtures/p{p:.3f}.json"
        continual_mixture(original, new, p).save(out_dir / rel)
        files.append(rel)
    plan = ContinualPlan(
        original_mixture=os.path.abspath(original_path), new_mixture=os.path.abspath(new_path),
        base_ckpt=os.path.abspath(base_ckpt), proportions=list(config.proportions), mixtures=files,
        base_run=os.path.abspath(base_run) if base_run else None,
    )
    plan.save(out_dir / PLAN_FILE)
    from regmix_plugin.sweep.study import trainer_command, write_study

    study: dict[str, Any] = {
        "name": config.name,
        "base_mixture": files[0],  # only the domain list is read from it; every file has the same domains
        "mixtures": "mixtures",
        "out": ".",
        "command": trainer_command("--init-from", plan.base_ckpt),  # every run resumes from the base
        "proxy_config": os.path.abspath(config.proxy_config),
        "env": dict(config.env),
        "backend": config.backend,
        "local": {"max_concurrent": config.max_concurrent},
    }
    if config.slurm:
        study["slurm"] = dict(config.slurm)
    write_study(out_dir / STUDY_FILE, study)
    return plan
