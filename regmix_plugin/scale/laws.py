"""The scaling stage's laws: step laws on runs' eval curves and size laws across model sizes (Data Mixing
Laws, arXiv 2403.16952, section 3/4), fitted with the shared saturating law (`regmix_plugin.laws`).

Step laws on runs' eval curves and extrapolation to longer runs (:func:`extrapolate_steps`), size laws across
runs tables of several model sizes (:func:`extrapolate_size`), the choice of the law settings by held-out
data (:class:`LawChoice`) and the rank-invariance check (:func:`rank_invariance`); the nested prediction
is `regmix_plugin.scale.nested`. Laws are fitted to every evaluation metric (``valid/<set>/<metric>`` by
default, `regmix_plugin.table.eval_columns`), whether or not its set is a training domain.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.laws.saturating import LawConfig, LawFitError, PowerLaw, fit_power_laws
from regmix_plugin.scale.match import MATCH_TOL, match_tables
from regmix_plugin.collect.curves import curve_metrics
from regmix_plugin.table import IMPORTED, eval_columns, normalised_name, weight_column
from regmix_plugin.table import domains as table_domains


# Rows of a table predicted by a law are not runs of this sweep: they carry the status of external results
# ("imported", which `regmix fit` accepts) and a ``source`` column naming the law.
DERIVED_STATUS = IMPORTED


# ---- choosing the law settings by held-out data ------------------------------------------------------

ALPHAS = ("auto", "shared", "per-metric")


@dataclass
class LawChoice:
    """The settings a law was fitted with and how they were chosen.

    alpha: ``shared`` (one exponent per run, or per mixture across sizes) or ``per-metric``.
    min_step: the warm-up cut of a step law (evals before it are left out); None for a size law.
    how: ``held-out`` (the candidate with the lowest error on held-out data), ``given`` (flags) or
    ``fallback`` (too little data to hold any out; ``reason`` says why).
    scores: one row per candidate: its settings and its mean absolute relative error on the held-out data.
    holdout: what was held out, in words.
    """

    alpha: str
    min_step: int | None = None
    how: str = "given"
    reason: str = ""
    scores: list[dict[str, Any]] = field(default_factory=list)
    holdout: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "min_step": self.min_step, "how": self.how, "reason": self.reason,
                "holdout": self.holdout, "scores": self.scores}

    def summary(self, law: str) -> str:
        cut = f", warm-up cut: evals from step {self.min_step}" if self.min_step is not None else ""
        head = f"{law} settings: alpha {self.alpha}{cut}"
        if self.how == "given":
            return f"{head} (as given)"
        if self.how == "fallback":
            return f"{head} (default: {self.reason})"
        others = "; ".join(_score_text(s) for s in self.scores)
        return f"{head} (lowest error on {self.holdout}: {others})"


def _score_text(s: Mapping[str, Any]) -> str:
    cut = f", from step {s['min_step']}" if s.get("min_step") is not None else ""
    err = "n/a" if s.get("error") is None else f"{100 * s['error']:.2f}%"
    return f"{s['alpha']}{cut} {err}"


def _check_alpha(alpha: str) -> str:
    if alpha not in ALPHAS:
        raise ConfigError(f"alpha: unknown value {alpha!r}; choose one of {', '.join(ALPHAS)}")
    return alpha


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced (all of them when there are few)."""
    if len(items) <= n:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


# ---- training curves -------------------------------------------------------------------------------

# Held-out tail of the step-law choice: fit on evals up to the last fitted step / HOLDOUT_RATIO, score on
# the rest; 2 is an extrapolation of 2x, close to the 2-4x a nested prediction asks for.
HOLDOUT_RATIO = 2.0
# Warm-up cuts tried, as fractions of the last fitted step (0: every eval from step 1 on).
WARMUP_FRACTIONS = (0.0, 0.05, 0.1, 0.2)
# The choice is one per model size; scoring it on a spread of this many runs costs little and tells as much.
CHOICE_RUNS = 24


@dataclass
class StepFitConfig:
    """Which part of a curve the step law sees, and with which settings.

    axis: ``step`` or ``tokens`` (the x of the law).
    min_step: evals before this step are left out (warm-up distorts the start); None: chosen (see alpha).
    max_step: evals after this step are left out (to measure extrapolation, fit on a prefix).
    alpha: ``shared`` (one exponent per run, shared by its metrics), ``per-metric``, or ``auto``: the
        settings with the lowest error on the held-out last part of the curves (:func:`choose_step_settings`).
    metrics: globs of the evaluation metrics to fit (default ``valid/*/*``).
    """

    law: LawConfig = field(default_factory=LawConfig)
    axis: str = "step"
    min_step: int | None = None
    max_step: int | None = None
    alpha: str = "auto"
    metrics: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.axis not in ("step", "tokens"):
            raise ConfigError(f"axis: unknown value {self.axis!r}; choose one of step, tokens")
        if self.min_step is not None and self.min_step < 1:
            raise ConfigError(f"min_step: {self.min_step} must be >= 1 (a power law is undefined at step 0)")
        if self.max_step is not None and self.max_step <= (self.min_step or 1):
            raise ConfigError(f"max_step: {self.max_step} must be > min_step={self.min_step or 1}")
        _check_alpha(self.alpha)


def refuse_maximized(metrics, where: str) -> None:
    """The laws here saturate downward to a floor (a loss falling with steps or size); an accuracy rises toward
    a ceiling, so fitting them to one would extrapolate the wrong way: refused in one line (DECISIONS 67)."""
    from regmix_plugin.table import metric_direction

    up = [m for m in metrics if metric_direction(m) == "maximize"]
    if up:
        raise RegmixError(f"{where}: {up[0]!r} is an accuracy-like metric (higher is better); the scaling laws fit "
                          "losses that fall to a floor and cannot extrapolate it; choose losses with --metric "
                          "'valid/*/loss' (or bpb), and fit the accuracy at proxy scale with `regmix fit --maximize`")


def _step_points(curve: pd.DataFrame, config: StepFitConfig, where: str, lo: int, hi: float | None):
    """``{metric: (x, y)}`` of the evals with lo <= step <= hi."""
    if config.axis not in curve.columns:
        raise RegmixError(f"{where}: metrics have no {config.axis!r} key; use --axis step")
    sel = curve[curve["step"] >= lo]
    if hi is not None:
        sel = sel[sel["step"] <= hi]
    metrics = curve_metrics(curve, config.metrics)
    if not metrics:
        raise RegmixError(f"{where}: no evaluation metric matches {', '.join(config.metrics or ('valid/*/*',))}; "
                          f"the curve has {', '.join(c for c in curve.columns if c not in ('step', 'tokens')) or 'none'}")
    refuse_maximized(metrics, where)
    return {m: (sel[config.axis].to_numpy(float), sel[m].to_numpy(float)) for m in metrics}


def _fit_steps(curves: Mapping[str, pd.DataFrame], config: StepFitConfig, alpha: str, lo: int,
               hi: float | None) -> dict[str, dict[str, PowerLaw]]:
    """Step laws of every run and metric in one batch; run -> metric -> law."""
    named, groups = {}, {}
    for run_id, curve in curves.items():
        for m, xy in _step_points(curve, config, run_id, lo, hi).items():
            named[(run_id, m)] = xy
            groups[(run_id, m)] = run_id if alpha == "shared" else (run_id, m)
    fitted = fit_power_laws({f"{r}: {m}": xy for (r, m), xy in named.items()}, config.law,
                            groups={f"{r}: {m}": groups[(r, m)] for r, m in named})
    out: dict[str, dict[str, PowerLaw]] = {r: {} for r in curves}
    for (r, m), law in zip(named, fitted.values()):
        out[r][m] = law
    return out


def _last_step(curves: Mapping[str, pd.DataFrame], max_step: int | None) -> float:
    steps = [float(c["step"][c["step"] <= (max_step or np.inf)].max()) for c in curves.values()]
    return max(s for s in steps if math.isfinite(s))


def choose_step_settings(curves: Mapping[str, pd.DataFrame], config: StepFitConfig) -> LawChoice:
    """The step law's exponent sharing and warm-up cut, by the error on each curve's held-out last part.

    Candidates: ``shared`` and ``per-metric`` exponents (unless ``config.alpha`` fixes one) times the
    warm-up cuts :data:`WARMUP_FRACTIONS` of the last fitted step (unless ``config.min_step`` fixes one).
    Each is fitted on the evals up to the last fitted step / :data:`HOLDOUT_RATIO` of up to
    :data:`CHOICE_RUNS` runs and scored by the mean absolute relative error on the later evals; the
    extrapolation target itself is never looked at.
    """
    alphas = ["shared", "per-metric"] if config.alpha == "auto" else [config.alpha]
    last = _last_step(curves, config.max_step)
    steps = sorted({int(s) for c in curves.values() for s in c["step"] if 1 <= s <= last})
    if config.min_step is not None:
        cuts = [config.min_step]
    else:
        # Each fraction as the first eval step at or after it; fractions that land on the same eval are one.
        cuts = list(dict.fromkeys(next((s for s in steps if s >= max(1.0, f * last)), steps[-1])
                                  for f in WARMUP_FRACTIONS))
    if len(alphas) == 1 and len(cuts) == 1:
        return LawChoice(alphas[0], cuts[0], "given")
    boundary = last / HOLDOUT_RATIO
    sample = dict(_spread(list(curves.items()), CHOICE_RUNS))
    holdout = f"the held-out evals after step {boundary:g} (fitted up to it, {len(sample)} runs)"
    scores = []
    for alpha in alphas:
        for cut in cuts:
            row: dict[str, Any] = {"alpha": alpha, "min_step": int(cut), "error": None}
            try:
                laws = _fit_steps(sample, config, alpha, cut, boundary)
            except LawFitError as e:
                row["note"] = str(e)
                scores.append(row)
                continue
            errs = []
            for run_id, curve in sample.items():
                tail = curve[(curve["step"] > boundary) & (curve["step"] <= last)]
                for m, law in laws[run_id].items():
                    y = tail[m].to_numpy(float)
                    ok = np.isfinite(y) & (y > 0)
                    if ok.any():
                        errs.append(float(np.mean(np.abs(law.predict(tail[config.axis].to_numpy(float)[ok]) / y[ok] - 1))))
            row["error"] = float(np.mean(errs)) if errs else None
            scores.append(row)
    scored = [r for r in scores if r["error"] is not None]
    if not scored:
        alpha = "shared" if "shared" in alphas else alphas[0]
        cut = config.min_step or steps[0]
        return LawChoice(alpha, cut, "fallback", scores=scores, holdout=holdout,
                         reason=f"too few evals before step {boundary:g} to hold out the rest "
                                f"(a law needs {config.law.min_points} per metric); {alpha} exponents, evals from step {cut}")
    best = min(scored, key=lambda r: r["error"])  # ties: the earlier candidate (shared, smaller cut)
    return LawChoice(best["alpha"], best["min_step"], "held-out", scores=scores, holdout=holdout)


@dataclass
class StepResult:
    """What :func:`extrapolate_steps` produced: a runs table per target, the laws, and their settings."""

    tables: dict[float, pd.DataFrame]
    laws: dict[str, dict[str, PowerLaw]]  # run -> metric -> law
    choice: LawChoice

    @property
    def table(self) -> pd.DataFrame:
        """The table of the first target."""
        return next(iter(self.tables.values()))


def fit_step_laws(curve: pd.DataFrame, config: StepFitConfig, where: str = "run") -> dict[str, PowerLaw]:
    """Step laws of one run's eval curve (`regmix_plugin.collect.curves.read_eval_curve`): metric column -> law."""
    choice = choose_step_settings({where: curve}, config)
    return _fit_steps({where: curve}, config, choice.alpha, choice.min_step, config.max_step)[where]


def extrapolate_steps(
    runs: Mapping[str, tuple[Mapping[str, float], pd.DataFrame]],
    target: float | Sequence[float],
    config: StepFitConfig,
) -> StepResult:
    """Extrapolate each run's evaluation metrics to each ``target`` (steps or tokens on ``config.axis``).

    ``runs`` maps run id -> (mixture weights ``{domain: w}``, eval curve). The settings come from
    :func:`choose_step_settings`; all runs are then fitted in one batch. Each table has the runs-table schema
    (`regmix_plugin.table`, see :data:`DERIVED_STATUS`) with the metrics predicted at its target.
    """
    targets = [float(t) for t in (target if isinstance(target, (list, tuple)) else [target])]
    for t in targets:
        if not t > 0:
            raise ConfigError(f"target: {t:g} must be > 0 (the {config.axis} to extrapolate to)")
    if not runs:
        raise RegmixError("runs: nothing to fit; give at least one run's curve")
    curves = {r: c for r, (_, c) in runs.items()}
    choice = choose_step_settings(curves, config)
    laws = _fit_steps(curves, config, choice.alpha, choice.min_step, config.max_step)
    tables = {}
    for t in targets:
        rows = []
        for run_id, (weights, _) in runs.items():
            row: dict[str, Any] = {"run_id": run_id, "status": DERIVED_STATUS, "source": "step law"}
            row.update({weight_column(d): float(w) for d, w in weights.items()})
            row.update({m: float(law.predict(t)) for m, law in laws[run_id].items()})
            row[config.axis] = t
            rows.append(row)
        tables[t] = pd.DataFrame(rows)
    return StepResult(tables, laws, choice)


# ---- model size ------------------------------------------------------------------------------------

@dataclass
class SizeResult:
    """What :func:`extrapolate_size` produced."""

    table: pd.DataFrame  # the runs table predicted at the target size
    laws: dict[str, dict[str, PowerLaw]]  # run id (of the smallest size's table) -> metric -> law
    choice: LawChoice
    dropped: list[str]  # rows left out by the mixture matching, with the reason
    metrics: list[str]


def _fit_sizes(matched: list[pd.DataFrame], sizes: list[float], metrics: list[str], alpha: str,
               config: LawConfig) -> list[dict[str, PowerLaw]]:
    """Size laws of every (mixture, metric) in one batch; one dict per row of the matched tables."""
    x = np.array(sizes, dtype=float)
    named, groups = {}, {}
    ids = matched[0]["run_id"].astype(str).tolist()
    for i, run_id in enumerate(ids):
        for m in metrics:
            key = f"{run_id}: {m}"
            named[key] = (x, np.array([t[m].iloc[i] for t in matched], dtype=float))
            groups[key] = i if alpha == "shared" else key
    fitted = fit_power_laws(named, config, groups=groups)
    return [{m: fitted[f"{run_id}: {m}"] for m in metrics} for run_id in ids]


def extrapolate_size(
    tables: Mapping[float, pd.DataFrame],
    target_params: float,
    config: LawConfig | None = None,
    *,
    alpha: str = "auto",
    metrics: Sequence[str] | None = None,
    match_tol: float = MATCH_TOL,
) -> SizeResult:
    """Size law per mixture and evaluation metric across runs tables at several non-embedding parameter counts.

    ``tables`` maps parameter count -> runs table (at the same step budget, e.g. from
    :func:`extrapolate_steps`). Mixtures are matched by their weights (within ``match_tol``, rows left out
    are listed in ``dropped``). ``metrics``: globs of the metrics to fit (default ``valid/*/*``: every
    evaluation set, training domain or not). ``alpha``: ``shared`` (one exponent per mixture), ``per-metric``
    or ``auto``: with 4 or more sizes, the one with the lower error at the largest size when it is held out;
    with 3, ``shared``. Rows come in the order of the smallest model's table.
    """
    config = config or LawConfig(min_points=3)
    _check_alpha(alpha)
    if len(tables) < config.min_points:
        raise RegmixError(f"--scale: {len(tables)} model sizes; the size law needs at least {config.min_points}")
    if not target_params > 0:
        raise ConfigError(f"target_params: {target_params} must be > 0")
    sizes = sorted(tables)
    match = match_tables([tables[n] for n in sizes], [f"size {n:g}" for n in sizes], match_tol)
    matched = match.tables
    cols = eval_columns(matched[0], metrics)
    if not cols:
        raise RegmixError(f"size {sizes[0]:g}: no metric column matches {', '.join(metrics or ('valid/*/*',))}; "
                          "give runs tables with valid/<set>/<metric> columns (or --metric)")
    refuse_maximized(cols, f"size {sizes[0]:g}")
    for t, n in zip(matched[1:], sizes[1:]):
        missing = [c for c in cols if c not in t.columns]
        if missing:
            raise RegmixError(f"size {n:g}: runs table has no {missing[0]} column; collect the same metrics at each size")
    choice = choose_size_alpha(matched, sizes, cols, alpha, config)
    fitted = _fit_sizes(matched, sizes, cols, choice.alpha, config)
    base = matched[0]
    out = base[["run_id"] + [weight_column(d) for d in table_domains(base)]].copy()
    out["status"] = DERIVED_STATUS
    out["source"] = "size law"
    for c in cols:
        out[c] = [float(per[c].predict(target_params)) for per in fitted]
    out["params"] = float(target_params)
    laws = dict(zip(base["run_id"].astype(str), fitted))
    return SizeResult(out, laws, choice, match.dropped, cols)


def choose_size_alpha(matched: list[pd.DataFrame], sizes: list[float], metrics: list[str], alpha: str,
                      config: LawConfig) -> LawChoice:
    """Shared or per-metric size exponents: the lower error at the largest size, fitted on the others."""
    if alpha != "auto":
        return LawChoice(alpha, None, "given")
    if len(sizes) - 1 < config.min_points:
        return LawChoice("shared", None, "fallback",
                         reason=f"{len(sizes)} sizes leave none to hold out (a law needs {config.min_points}); "
                                "shared exponents, steadier on few points (docs/scaling.md)")
    held = sizes[-1]
    scores = []
    for cand in ("shared", "per-metric"):
        fitted = _fit_sizes(matched[:-1], sizes[:-1], metrics, cand, config)
        errs = [abs(float(per[m].predict(held)) / float(matched[-1][m].iloc[i]) - 1)
                for i, per in enumerate(fitted) for m in metrics if float(matched[-1][m].iloc[i]) > 0]
        scores.append({"alpha": cand, "error": float(np.mean(errs)) if errs else None})
    best = min((s for s in scores if s["error"] is not None), key=lambda s: s["error"], default=None)
    if best is None:
        return LawChoice("shared", None, "fallback", reason="no finite loss at the largest size to score on")
    return LawChoice(best["alpha"], None, "held-out", scores=scores,
                     holdout=f"the largest size ({held:g}) held out, fitted on the {len(sizes) - 1} others")


# ---- rank invariance ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankCheck:
    """Spearman rho between two scales per metric, and the metrics whose ranking did not carry over."""

    table: pd.DataFrame  # columns: metric, rho, n
    threshold: float
    dropped: tuple[str, ...] = ()  # rows the mixture matching left out, with the reason

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
                    metrics: Sequence[str] | None = None, match_tol: float = MATCH_TOL) -> RankCheck:
    """Spearman rho per evaluation metric between runs of the same mixtures at two scales (matched by weights).

    ``metrics``: column names or globs (default ``valid/*/*``, in both tables)."""
    if not -1 <= threshold <= 1:
        raise ConfigError(f"threshold: {threshold} must be in [-1, 1]")
    match = match_tables([small, large], ["small table", "large table"], match_tol)
    a, b = match.tables
    if len(a) < 3:
        raise RegmixError(f"runs tables: only {len(a)} mixtures in common; a rank correlation needs at least 3")
    if metrics:
        # A metric may be named as the source file spells it (metric/the_pile_pile_cc_val_loss).
        metrics = [m if eval_columns(a, [m]) else normalised_name(m) for m in metrics]
        for m in metrics:
            for t, n in ((a, "small"), (b, "large")):
                if not eval_columns(t, [m]):
                    raise RegmixError(f"{n} table: no column matches {m!r}; choose among {', '.join(eval_columns(t)) or 'none'}")
    chosen = [c for c in eval_columns(a, metrics) if c in b.columns]
    if not chosen:
        raise RegmixError("runs tables: no valid/<set>/<metric> column in both; give tables from `regmix collect`")
    rows = []
    for m in chosen:
        x, y = a[m].to_numpy(float), b[m].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant column gives nan rho, reported as such
            rho = spearmanr(x[ok], y[ok]).statistic if ok.sum() >= 3 else math.nan
        rows.append({"metric": m, "rho": float(rho), "n": int(ok.sum())})
    return RankCheck(pd.DataFrame(rows), threshold, tuple(match.dropped))
