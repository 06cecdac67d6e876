"""Scaling laws across training length and model size (Data Mixing Laws, arXiv 2403.16952, section 3/4).

Every law here has the saturating form, fitted by one robust routine (:func:`fit_laws`):

    L(z) = exp(e) + exp(beta + gamma * z)          i.e.  log L = logaddexp(e, beta + gamma * z)

- step law  L(s) = E + (s0/s)^alpha  with z = log s, gamma = -alpha <= 0, beta = alpha * log s0;
- size law  L(N) = E + (N0/N)^alpha  likewise with z = log N (non-embedding parameters);
- the 1-D mixing law of continual training L(p) = c + k * exp(t * p) with z = p, gamma = t
  (`regmix_plugin.optimize.continual`).

Log-parametrisation keeps E and the power term positive without constraints, and writing the law as a
``logaddexp`` of two linear forms gives an exact, cheap gradient. The loss is Huber on log-residuals (as in
Chinchilla's fit, delta = 1e-3) so a few noisy evaluation points do not drag the fit, and L-BFGS-B starts
from a grid of (E, gamma) points because the problem is not convex. Several series can share gamma
(one exponent across domains).

On top: per-domain step laws on a run's ``metrics.jsonl`` and extrapolation to a longer run
(:func:`extrapolate_steps`), size laws across runs tables of several model sizes (:func:`extrapolate_size`),
the nested prediction (:func:`nested_predict`) and the rank-invariance check (:func:`rank_invariance`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.table import domains as table_domains
from regmix_plugin.table import loss_column, weight_column


class LawFitError(RegmixError):
    """Too few or unusable points for a law."""


@dataclass
class LawConfig:
    """How a law is fitted.

    huber_delta: Huber threshold on log-loss residuals (1e-3 = 0.1 % relative error, Chinchilla's value).
    e_fractions: starting values of the floor E as fractions of the smallest observed loss (multi-start).
    gammas: starting values of gamma (the exponent, negative for power laws) (multi-start).
    min_points: a series with fewer finite points is an error (a 3-parameter law needs more than 3).
    max_iter: L-BFGS-B iteration cap per start.
    """

    huber_delta: float = 1e-3
    e_fractions: tuple[float, ...] = (0.0, 0.5, 0.8, 0.95)
    gammas: tuple[float, ...] = (-0.05, -0.15, -0.4, -1.0, -2.0)
    min_points: int = 4
    max_iter: int = 500

    def __post_init__(self) -> None:
        if not self.huber_delta > 0:
            raise ConfigError(f"huber_delta: {self.huber_delta} must be > 0 (try 1e-3)")
        if not self.e_fractions or any(not 0 <= f < 1 for f in self.e_fractions):
            raise ConfigError(f"e_fractions: {self.e_fractions} must be a non-empty list of values in [0, 1)")
        if not self.gammas:
            raise ConfigError("gammas: give at least one starting exponent")
        if self.min_points < 3:
            raise ConfigError(f"min_points: {self.min_points} must be >= 3 (a law has 3 parameters)")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter: {self.max_iter} must be >= 1")


@dataclass(frozen=True)
class LawParams:
    """A fitted ``log L = logaddexp(e, beta + gamma * z)``; ``loss`` is the mean Huber objective at the optimum."""

    e: float
    beta: float
    gamma: float
    n_points: int
    loss: float

    def predict_z(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        return np.exp(np.logaddexp(self.e, self.beta + self.gamma * z))


def clean_series(z, y, where: str, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite, positive points only; one-line error naming the series when too few are left."""
    z = np.asarray(z, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if z.shape != y.shape:
        raise LawFitError(f"{where}: {z.size} x values but {y.size} losses; give one loss per point")
    ok = np.isfinite(z) & np.isfinite(y) & (y > 0)
    if ok.sum() < min_points:
        raise LawFitError(
            f"{where}: {int(ok.sum())} usable points (finite, loss > 0); a law needs at least {min_points}, "
            "so evaluate more often or fit from an earlier step"
        )
    return z[ok], y[ok]


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(r)
    val = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return val, np.clip(r, -delta, delta)


def fit_laws(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
    config: LawConfig,
    *,
    shared_gamma: bool = False,
    gamma_bounds: tuple[float | None, float | None] = (None, 0.0),
) -> list[LawParams]:
    """Fit one law per series ``(z, y)``; with ``shared_gamma`` all series share one gamma.

    Series must be cleaned already (:func:`clean_series`). Independent series are fitted one at a time
    (same result as a joint fit, and far cheaper); shared gamma is a joint fit over all of them.
    """
    if not series:
        raise LawFitError("series: nothing to fit; give at least one curve")
    if not shared_gamma and len(series) > 1:
        return [fit_laws([s], config, gamma_bounds=gamma_bounds)[0] for s in series]
    # L-BFGS-B calls BLAS on tiny vectors; a multi-threaded BLAS makes that ~50x slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_joint(list(series), config, gamma_bounds)


def _fit_joint(series, config: LawConfig, gamma_bounds) -> list[LawParams]:
    k = len(series)
    zs = [np.asarray(z, float) for z, _ in series]
    logys = [np.log(np.asarray(y, float)) for _, y in series]
    n_total = sum(z.size for z in zs)
    delta = config.huber_delta

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        e, beta, gamma = theta[:k], theta[k:2 * k], theta[2 * k]
        grad = np.zeros_like(theta)
        total = 0.0
        for i in range(k):
            v = beta[i] + gamma * zs[i]
            pred = np.logaddexp(e[i], v)
            val, dr = _huber(pred - logys[i], delta)
            total += val.sum()
            s = np.exp(e[i] - pred)  # d pred / d e; 1 - s = d pred / d beta
            grad[i] += (dr * s).sum()
            grad[k + i] += (dr * (1 - s)).sum()
            grad[2 * k] += (dr * (1 - s) * zs[i]).sum()
        # Scaled by 1/delta^2 so that the objective is O(1) near the optimum and L-BFGS-B's absolute
        # gradient tolerance does not stop it early; `loss` below is reported unscaled.
        scale = 1.0 / (n_total * delta * delta)
        return total * scale, grad * scale

    lo, hi = gamma_bounds
    bounds = [(None, None)] * (2 * k) + [(lo, hi)]
    best = None
    for g0 in config.gammas:
        g0 = float(np.clip(g0, lo if lo is not None else -np.inf, hi if hi is not None else np.inf))
        for f in config.e_fractions:
            theta0 = np.empty(2 * k + 1)
            theta0[2 * k] = g0
            for i in range(k):
                y = np.exp(logys[i])
                floor = f * y.min() if f > 0 else 1e-3 * y.min()
                theta0[i] = np.log(floor)
                # beta from least squares of log(y - E) - gamma z, the term the floor leaves over.
                rest = np.maximum(y - floor, 1e-6 * y.min())
                theta0[k + i] = float(np.mean(np.log(rest) - g0 * zs[i]))
            res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": config.max_iter})
            if np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
                best = res
    if best is None:
        raise LawFitError("fit: every start diverged; check that the losses are positive and vary with x")
    th = best.x
    return [
        LawParams(e=float(th[i]), beta=float(th[k + i]), gamma=float(th[2 * k]), n_points=int(zs[i].size),
                  loss=float(best.fun * delta * delta))
        for i in range(k)
    ]


# ---- power laws in x (steps, tokens or parameters) -------------------------------------------------

# Rows of a table predicted by a law are not runs of this sweep: they carry the status of external results
# ("imported", which `regmix fit` accepts) and a ``source`` column naming the law.
DERIVED_STATUS = "imported"

# Power-law exponents are alpha = -gamma; start the search over a spread of plausible exponents.
POWER_GAMMAS = (-0.05, -0.15, -0.4, -1.0, -2.0)


@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = E + (x0 / x)^alpha = E + exp(beta - alpha * log x)``, with ``beta = alpha * log x0``.

    Stored as (E, alpha, beta) because x0 is undefined when alpha = 0 (a flat curve) while beta is not.
    ``n_points`` and ``loss`` (mean Huber objective at the optimum) describe the fit.
    """

    E: float
    alpha: float
    beta: float
    n_points: int = 0
    loss: float = 0.0

    @classmethod
    def from_params(cls, p: LawParams) -> "PowerLaw":
        return cls(E=math.exp(p.e), alpha=-p.gamma, beta=p.beta, n_points=p.n_points, loss=p.loss)

    @property
    def x0(self) -> float:
        return math.exp(self.beta / self.alpha) if self.alpha > 1e-12 and abs(self.beta / self.alpha) < 700 else math.nan

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.E + np.exp(self.beta - self.alpha * np.log(x))

    def to_dict(self) -> dict[str, float]:
        x0 = self.x0
        return {"E": self.E, "alpha": self.alpha, "beta": self.beta, "x0": x0 if math.isfinite(x0) else None,
                "n_points": self.n_points, "loss": self.loss}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PowerLaw":
        return cls(E=float(d["E"]), alpha=float(d["alpha"]), beta=float(d["beta"]),
                   n_points=int(d.get("n_points", 0)), loss=float(d.get("loss", 0.0)))


def fit_power_laws(
    curves: Mapping[str, tuple[Any, Any]], config: LawConfig | None = None, *, shared_alpha: bool = False
) -> dict[str, PowerLaw]:
    """Fit ``L(x) = E + (x0/x)^alpha`` to each named curve ``(x, y)``; ``shared_alpha`` ties the exponents."""
    config = config or LawConfig(gammas=POWER_GAMMAS)
    names = list(curves)
    series = []
    for name in names:
        x, y = curves[name]
        x, y = clean_series(x, y, name, config.min_points)
        if np.any(x <= 0):
            raise LawFitError(f"{name}: x must be > 0 for a power law (drop step 0 / give positive sizes)")
        series.append((np.log(x), y))
    fitted = fit_laws(series, config, shared_gamma=shared_alpha, gamma_bounds=(None, 0.0))
    return {n: PowerLaw.from_params(p) for n, p in zip(names, fitted)}


# ---- training curves from metrics.jsonl ----------------------------------------------------------

def read_run_curve(run_dir: str | os.PathLike) -> tuple[dict[str, float] | None, pd.DataFrame]:
    """A run's mixture weights and its eval curve: one row per eval step, ``step``, ``tokens``, ``valid/<d>/loss``.

    Parsing is the sweep collector's (`regmix_plugin.sweep.collect.read_run`: torn lines skipped, a resumed
    run's repeated steps merged). Weights come from the run's ``mixture.json`` (sweep runs) or else from the
    mixture that its ``config.yaml`` names (a plain ``regmix train`` run); None when neither exists.
    """
    from regmix_plugin.sweep.collect import read_run

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise RegmixError(f"{run_dir}: no metrics.jsonl; give a run directory written by `regmix train` (or a sweep)")
    rec = read_run(run_dir, [])
    rows = [{"step": step, **{k: v for k, v in ev.items() if k == "tokens" or _is_loss_key(k)}}
            for step, ev in sorted(rec.evals.items())]
    rows = [r for r in rows if any(_is_loss_key(k) for k in r)]
    if not rows:
        raise RegmixError(f"{run_dir}/metrics.jsonl: no eval lines with valid/<domain>/loss keys; did the run reach its first eval?")
    curve = pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce").reset_index(drop=True)
    return rec.weights or _weights_from_config(run_dir), curve


def read_eval_curve(run_dir: str | os.PathLike) -> pd.DataFrame:
    return read_run_curve(run_dir)[1]


def _weights_from_config(run_dir: Path) -> dict[str, float] | None:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        first = Path(cfg["run"]["schedule"][0]["mixture"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
    from regmix_plugin.mixture import Mixture, MixtureError

    try:
        mix = Mixture.load(first if first.is_absolute() else run_dir / first)
    except MixtureError:
        return None
    return dict(zip(mix.names, mix.weights))


def _is_loss_key(k: str) -> bool:
    return k.startswith("valid/") and k.endswith("/loss") and k.count("/") == 2


def curve_domains(curve: pd.DataFrame) -> list[str]:
    return [c.split("/")[1] for c in curve.columns if _is_loss_key(c)]


@dataclass
class StepFitConfig:
    """Which part of a curve the step law sees.

    axis: ``step`` or ``tokens`` (the x of the law).
    min_step: points before this step are left out (step 0 has no power law; warm-up distorts the start).
    max_step: points after this step are left out (to measure extrapolation, fit on a prefix).
    shared_alpha: one exponent across the domains of a run.
    """

    law: LawConfig = field(default_factory=lambda: LawConfig(gammas=POWER_GAMMAS))
    axis: str = "step"
    min_step: int = 1
    max_step: int | None = None
    shared_alpha: bool = False

    def __post_init__(self) -> None:
        if self.axis not in ("step", "tokens"):
            raise ConfigError(f"axis: unknown value {self.axis!r}; choose one of step, tokens")
        if self.min_step < 1:
            raise ConfigError(f"min_step: {self.min_step} must be >= 1 (a power law is undefined at step 0)")
        if self.max_step is not None and self.max_step <= self.min_step:
            raise ConfigError(f"max_step: {self.max_step} must be > min_step={self.min_step}")


def fit_step_laws(curve: pd.DataFrame, config: StepFitConfig, where: str = "run") -> dict[str, PowerLaw]:
    """Per-domain step laws of one run's eval curve (``read_eval_curve``)."""
    sel = curve[curve["step"] >= config.min_step]
    if config.max_step is not None:
        sel = sel[sel["step"] <= config.max_step]
    if config.axis not in sel.columns:
        raise RegmixError(f"{where}: metrics have no {config.axis!r} key; use --axis step")
    doms = curve_domains(curve)
    curves = {d: (sel[config.axis].to_numpy(float), sel[loss_column(d)].to_numpy(float)) for d in doms}
    laws = fit_power_laws({f"{where}: {d}": c for d, c in curves.items()}, config.law,
                          shared_alpha=config.shared_alpha)
    return dict(zip(doms, laws.values()))


def extrapolate_steps(
    runs: Mapping[str, tuple[Mapping[str, float], pd.DataFrame]],
    target: float,
    config: StepFitConfig,
) -> tuple[pd.DataFrame, dict[str, dict[str, PowerLaw]]]:
    """Extrapolate each run's per-domain losses to ``target`` (a step or token count on ``config.axis``).

    ``runs`` maps run id -> (mixture weights ``{domain: w}``, eval curve). Returns a runs table (the schema
    of `regmix_plugin.table`, see :data:`DERIVED_STATUS`) with the predicted ``valid/<d>/loss`` at
    ``target``, and the fitted laws per run and domain.
    """
    if not target > 0:
        raise ConfigError(f"target: {target} must be > 0 (the {config.axis} to extrapolate to)")
    rows, laws = [], {}
    for run_id, (weights, curve) in runs.items():
        fitted = fit_step_laws(curve, config, where=run_id)
        laws[run_id] = fitted
        row: dict[str, Any] = {"run_id": run_id, "status": DERIVED_STATUS, "source": "step law"}
        row.update({weight_column(d): float(w) for d, w in weights.items()})
        row.update({loss_column(d): float(law.predict(target)) for d, law in fitted.items()})
        row[config.axis] = target
        rows.append(row)
    return pd.DataFrame(rows), laws


# ---- model size ------------------------------------------------------------------------------------

def mixture_keys(df: pd.DataFrame, decimals: int = 6) -> list[tuple[float, ...]]:
    """One hashable key per row: the weights in sorted-domain order, rounded (so re-normalised files match)."""
    doms = sorted(table_domains(df))
    w = df[[weight_column(d) for d in doms]].to_numpy(float)
    w = w / w.sum(axis=1, keepdims=True)
    return [tuple(np.round(r, decimals)) for r in w]


def match_tables(tables: Sequence[pd.DataFrame], names: Sequence[str]) -> list[pd.DataFrame]:
    """The rows of each table for the mixtures that every table has, in one common order."""
    doms0 = sorted(table_domains(tables[0]))
    for t, n in zip(tables[1:], names[1:]):
        if sorted(table_domains(t)) != doms0:
            raise RegmixError(f"{n}: domains {sorted(table_domains(t))} differ from {names[0]}'s {doms0}; "
                              "give runs over the same domains")
    keyed = []
    for t, n in zip(tables, names):
        keys = mixture_keys(t)
        if len(set(keys)) != len(keys):
            raise RegmixError(f"{n}: two runs have the same mixture; keep one run per mixture (or average them)")
        keyed.append(dict(zip(keys, range(len(t)))))
    common = [k for k in keyed[0] if all(k in m for m in keyed[1:])]
    if not common:
        raise RegmixError(f"{', '.join(names)}: no mixture appears in all tables; run the same mixtures at each scale")
    return [t.iloc[[m[k] for k in common]].reset_index(drop=True) for t, m in zip(tables, keyed)]


def loss_columns(df: pd.DataFrame) -> list[str]:
    return [loss_column(d) for d in table_domains(df) if loss_column(d) in df.columns]


def extrapolate_size(
    tables: Mapping[float, pd.DataFrame],
    target_params: float,
    config: LawConfig | None = None,
    *,
    shared_alpha: bool = False,
) -> tuple[pd.DataFrame, dict[str, dict[str, PowerLaw]]]:
    """Size law per mixture and domain across runs tables at several non-embedding parameter counts.

    ``tables`` maps parameter count -> runs table (at the same step budget, e.g. from
    :func:`extrapolate_steps`). Mixtures are matched by their weights. Returns the runs table predicted at
    ``target_params`` (rows in the order of the smallest model's table) and the laws per run and domain.
    """
    config = config or LawConfig(gammas=POWER_GAMMAS, min_points=3)
    if len(tables) < config.min_points:
        raise RegmixError(f"--scale: {len(tables)} model sizes; the size law needs at least {config.min_points}")
    if not target_params > 0:
        raise ConfigError(f"target_params: {target_params} must be > 0")
    sizes = sorted(tables)
    matched = match_tables([tables[n] for n in sizes], [f"size {n:g}" for n in sizes])
    base = matched[0]
    cols = loss_columns(base)
    for t, n in zip(matched[1:], sizes[1:]):
        missing = [c for c in cols if c not in t.columns]
        if missing:
            raise RegmixError(f"size {n:g}: runs table has no {missing[0]} column; collect the same metrics at each size")
    out = base[["run_id"] + [weight_column(d) for d in table_domains(base)]].copy()
    out["status"] = DERIVED_STATUS
    out["source"] = "size law"
    laws: dict[str, dict[str, PowerLaw]] = {}
    x = np.array(sizes, dtype=float)
    for i, run_id in enumerate(base["run_id"].astype(str)):
        curves = {c: (x, np.array([t[c].iloc[i] for t in matched], dtype=float)) for c in cols}
        fitted = fit_power_laws({f"{run_id}: {c}": v for c, v in curves.items()}, config, shared_alpha=shared_alpha)
        laws[run_id] = dict(zip(cols, fitted.values()))
        for c, law in laws[run_id].items():
            out.loc[i, c] = float(law.predict(target_params))
    out["params"] = float(target_params)
    return out, laws


# ---- rank invariance ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankCheck:
    """Spearman rho between two scales per metric, and the metrics whose ranking did not carry over."""

    table: pd.DataFrame  # columns: metric, rho, n
    threshold: float

    @property
    def low(self) -> list[str]:
        return [m for m, r in zip(self.table["metric"], self.table["rho"]) if not r >= self.threshold]

    def warning(self) -> str | None:
        if not self.low:
            return None
        return (f"rank invariance is weak for {', '.join(self.low)} (Spearman rho < {self.threshold:g} between "
                "scales): do not trust the small-proxy ranking there; use the nested scaling laws "
                "(`regmix scale predict`)")


def rank_invariance(small: pd.DataFrame, large: pd.DataFrame, threshold: float = 0.8,
                    metrics: Sequence[str] | None = None) -> RankCheck:
    """Spearman rho per metric between runs of the same mixtures at two scales (matched by weights)."""
    if not -1 <= threshold <= 1:
        raise ConfigError(f"threshold: {threshold} must be in [-1, 1]")
    a, b = match_tables([small, large], ["small table", "large table"])
    if len(a) < 3:
        raise RegmixError(f"runs tables: only {len(a)} mixtures in common; a rank correlation needs at least 3")
    from regmix_plugin.table import resolve_column

    # A metric may be named as the source file spells it (metric/the_pile_pile_cc_val_loss).
    metrics = [resolve_column(m, a.columns) or m for m in metrics] if metrics else [c for c in loss_columns(a) if c in b.columns]
    if not metrics:
        raise RegmixError("runs tables: no valid/<domain>/loss column in both; give tables from `regmix collect`")
    rows = []
    for m in metrics:
        for t, n in ((a, "small"), (b, "large")):
            if m not in t.columns:
                raise RegmixError(f"{n} table: no column {m!r}; choose one of {', '.join(loss_columns(t))}")
        x, y = a[m].to_numpy(float), b[m].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant column gives nan rho, reported as such
            rho = spearmanr(x[ok], y[ok]).statistic if ok.sum() >= 3 else math.nan
        rows.append({"metric": m, "rho": float(rho), "n": int(ok.sum())})
    return RankCheck(pd.DataFrame(rows), threshold)


# ---- nested prediction (Data Mixing Laws' pipeline) --------------------------------------------------------

@dataclass
class NestedResult:
    """What :func:`nested_predict` produced at each stage."""

    step_tables: dict[float, pd.DataFrame]  # per model size: losses extrapolated to the target step
    step_laws: dict[float, dict[str, dict[str, PowerLaw]]]
    table: pd.DataFrame  # losses predicted at the target step and size: a runs table
    size_laws: dict[str, dict[str, PowerLaw]]
    model: Any  # regmix_plugin.fit.model.FittedModel: the mixing law fitted on ``table``
    outcome: Any  # regmix_plugin.optimize.run.OptimizeOutcome: the optimised mixture


def nested_predict(
    runs_by_size: Mapping[float, Mapping[str, tuple[Mapping[str, float], pd.DataFrame]]],
    target_step: float,
    target_params: float,
    target_expr: str,
    step_config: StepFitConfig | None = None,
    size_config: LawConfig | None = None,
    fit_config: Any = None,
    constraints: Any = None,
    search_config: Any = None,
    base: Any = None,
) -> NestedResult:
    """Data Mixing Laws' nested prediction, from proxy curves at several sizes to an optimised mixture.

    1. per size, each mixture's per-domain losses are extrapolated along steps to ``target_step``;
    2. across sizes, each mixture's losses are extrapolated along size to ``target_params``;
    3. the mixing law (`regmix_plugin.fit`, ``mixing-law`` unless ``fit_config`` says otherwise) is fitted
       on those predicted losses for ``target_expr`` (e.g. ``mean(valid/*/loss)``);
    4. the optimiser (`regmix_plugin.optimize.run.optimize`) searches the simplex with it.
    ``runs_by_size`` maps non-embedding parameters -> run id -> (weights, eval curve) (:func:`read_run_curve`).
    """
    from regmix_plugin.fit.model import FitConfig, fit_model
    from regmix_plugin.optimize.constraints import Constraints
    from regmix_plugin.optimize.run import optimize
    from regmix_plugin.optimize.search import SearchConfig

    step_config = step_config or StepFitConfig()
    step_tables, step_laws = {}, {}
    for n, runs in runs_by_size.items():
        step_tables[n], step_laws[n] = extrapolate_steps(runs, target_step, step_config)
    table, size_laws = extrapolate_size(step_tables, target_params, size_config,
                                        shared_alpha=step_config.shared_alpha)
    if fit_config is None:
        fit_config = FitConfig(predictor="mixing-law", folds=max(2, min(5, len(table))))
    model = fit_model(table, target_expr, fit_config)
    outcome = optimize(model, constraints or Constraints(), search_config or SearchConfig(), base,
                       name="nested-scaling-opt")
    outcome.mixture.with_provenance(nested={"target_step": target_step, "target_params": target_params,
                                            "sizes": sorted(runs_by_size), "step_axis": step_config.axis})
    return NestedResult(step_tables, step_laws, table, size_laws, model, outcome)
