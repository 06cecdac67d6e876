"""Search multi-phase schedules with a model fitted on a schedule runs table: the library behind
`regmix optimize` when the model has phases (docs/phases.md).

Variables: the concatenated phase weights ``x = [x_0 | ... | x_{K-1}]`` over the model's domains. Constraints,
the same as for one mixture and counted the same way as synthesis counts them:

- each phase is a mixture: ``sum_d x_kd = 1``, within the constraints' ``min``/``max``/``fixed`` (per phase);
- token caps bind the whole schedule: a domain's exposure ``sum_k len_k x_kd`` is at most its
  ``tokens x max_epochs / target_tokens`` (a domain used in two phases draws on its tokens once);
- the total is fixed: the phases' lengths are the table's (the boundary is not searched).

Smooth predictors (phase-law, eff-law, ...) are minimised by SLSQP from the best of a pool of sampled
schedules and from the best single mixture repeated in every phase; tree models by RegMix's top-k average of
a sampled pool (an average of feasible schedules is feasible: the constraints are convex).

The best *single* mixture is searched with the same model and constraints (every phase the same mixture), so
the predicted gain of the schedule is what the phase split adds by the model's account. Its interval is the
split-conformal interval of optimize/uncertainty.py applied to both predictions at coverage (1 + c) / 2 each,
so that the difference holds at >= c by the union bound (conservative: the two errors are positively
correlated in practice and partly cancel).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.base import is_smooth
from regmix_plugin.fit.model import FittedModel
from regmix_plugin.mixture import Mixture
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.optimize.run import TokenSources, study_base_mixture
from regmix_plugin.optimize.search import project_bounded_simplex
from regmix_plugin.optimize.search_config import SearchConfig
from regmix_plugin.optimize.uncertainty import DEFAULT_COVERAGE, ConformalInterval, check_coverage


@dataclass
class Space:
    """The feasible schedules: per-phase bounds ``lo``/``hi`` (D), exposure caps ``cap`` (D), ``lengths`` (K)."""

    names: list[str]
    lengths: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cap: np.ndarray
    source: dict[str, str] = field(default_factory=dict)

    @property
    def K(self) -> int:
        return self.lengths.size

    def exposure(self, X: np.ndarray) -> np.ndarray:
        return np.einsum("k,nkd->nd", self.lengths, X.reshape(len(X), self.K, -1))

    def feasible(self, X: np.ndarray, tol: float = 1e-7) -> np.ndarray:
        Xk = X.reshape(len(X), self.K, -1)
        return ((np.abs(Xk.sum(axis=2) - 1) <= tol).all(axis=1) & (Xk >= self.lo - tol).all(axis=(1, 2))
                & (Xk <= self.hi + tol).all(axis=(1, 2)) & (self.exposure(X) <= self.cap + tol).all(axis=1))


def schedule_space(model: FittedModel, constraints: Constraints, tokens: dict[str, float]) -> Space:
    names = list(model.phases["domains"])
    constraints = constraints.named_for(names)
    lo, hi_all, source = constraints.bounds(names, tokens)
    per_phase = replace(constraints, target_tokens=None)
    _, hi, _ = per_phase.bounds(names, tokens)
    cap = np.where(hi_all < hi - 1e-15, hi_all, 1.0)  # where a token cap is tighter than max: the exposure cap
    return Space(names, np.asarray(model.phases["lengths"], float), lo, hi, cap, source)


def _pool(space: Space, prior: np.ndarray, n: int, cfg: SearchConfig, rng: np.random.Generator) -> np.ndarray:
    """``n`` sampled schedules (each phase a Dirichlet around the prior, projected on its bounds), feasible ones."""
    p = np.clip(prior, 1e-6, None)
    p = p / p.sum()
    phases = []
    for _ in range(space.K):
        s = rng.choice(np.asarray(cfg.strengths, float), size=n) * len(p)
        G = rng.gamma(np.outer(s, p))
        G = np.where(G.sum(axis=1, keepdims=True) > 0, G, p)
        phases.append(project_bounded_simplex(G / G.sum(axis=1, keepdims=True), space.lo, space.hi))
    X = np.concatenate(phases, axis=1)
    return X[space.feasible(X)]


def _single_pool(space: Space, prior: np.ndarray, n: int, cfg: SearchConfig, rng) -> np.ndarray:
    one = replace(space, lengths=np.array([1.0]), hi=np.minimum(space.hi, space.cap))
    return _pool(one, prior, n, cfg, rng)


def _slsqp(f, grad, x0: np.ndarray, space: Space, tied: bool, cfg: SearchConfig) -> tuple[np.ndarray, int]:
    """Minimise ``f`` over the schedules (``tied``: one mixture repeated in every phase, D variables)."""
    K, D = space.K, len(space.names)
    if tied:
        lo, hi = space.lo, np.minimum(space.hi, space.cap)
        cons = [{"type": "eq", "fun": lambda w: np.array([w.sum() - 1.0]), "jac": lambda w: np.ones((1, D))}]
    else:
        lo, hi = np.tile(space.lo, K), np.tile(space.hi, K)
        A_eq = np.kron(np.eye(K), np.ones((1, D)))
        A_cap = np.kron(space.lengths[None, :], np.eye(D))
        cons = [{"type": "eq", "fun": lambda x: A_eq @ x - 1.0, "jac": lambda x: A_eq},
                {"type": "ineq", "fun": lambda x: space.cap - A_cap @ x, "jac": lambda x: -A_cap}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = minimize(f, x0, jac=grad, method="SLSQP", bounds=list(zip(lo, hi)), constraints=cons,
                     options={"maxiter": cfg.max_iter, "ftol": 1e-10})
    x = np.clip(r.x, lo, hi)
    return x, int(r.nfev)


def _objective(model: FittedModel, space: Space, tied: bool):
    """``sign x prediction`` (lower is better whatever the target's direction) and its gradient."""
    pred = model.predictor
    K = space.K
    sign = model.target.sign
    grad_fn = getattr(pred, "gradient", None)

    def expand(w):
        return np.tile(w, K) if tied else w

    def f(w):
        return sign * float(pred.predict(expand(w)[None, :])[0])

    def grad(w):
        x = expand(w)
        if callable(grad_fn):
            g = np.asarray(grad_fn(x), float)
        else:  # central differences, one batched predict
            h = 1e-6
            E = np.eye(len(x)) * h
            P = pred.predict(np.vstack([x + E, x - E]))
            g = (P[: len(x)] - P[len(x):]) / (2 * h)
        g = sign * g
        return g.reshape(K, -1).sum(axis=0) if tied else g

    return f, grad


def _search(model: FittedModel, space: Space, prior: np.ndarray, cfg: SearchConfig, tied: bool,
            smooth: bool, extra_starts: list[np.ndarray]) -> tuple[np.ndarray, str, int]:
    rng = np.random.default_rng(cfg.seed + (1 if tied else 0))
    n = min(cfg.n_samples, 20_000) if smooth else cfg.n_samples
    pool = _single_pool(space, prior, n, cfg, rng) if tied else _pool(space, prior, n, cfg, rng)
    pool = np.vstack([pool, *[s[None, :] for s in extra_starts]]) if extra_starts else pool
    if len(pool) == 0:
        raise RegmixError("constraints: no sampled schedule met the per-phase bounds and token caps; loosen them")
    full = np.tile(pool, (1, space.K)) if tied else pool
    P = model.target.sign * model.predictor.predict(full)  # lower is better
    order = np.argsort(P, kind="stable")
    if not smooth:
        return pool[order[: cfg.top_k]].mean(axis=0), "top-k average", len(pool)
    f, grad = _objective(model, space, tied)
    best, best_f, evals = None, np.inf, len(pool)
    for i in order[: cfg.n_starts]:
        x, nf = _slsqp(f, grad, pool[i], space, tied, cfg)
        evals += nf
        fx = f(x)
        if fx < best_f:
            best, best_f = x, fx
    if best is None or best_f > P[order[0]]:  # SLSQP can stall at a kink; never return worse than the pool's best
        best = pool[order[0]]
    return best, "SLSQP", evals


@dataclass
class ScheduleOutcome:
    phases: list[Mixture]
    weights: np.ndarray  # (K, D)
    single: np.ndarray  # (D,) the best single mixture under the same model and constraints
    predicted: float
    predicted_single: float
    gain: dict[str, Any]
    space: Space
    method: str
    seconds: float
    provenance: dict[str, Any]


def optimize_schedule(model: FittedModel, constraints: Constraints, cfg: SearchConfig, base: Mixture | None = None,
                      name: str = "regmix-schedule", study: str | None = None,
                      coverage: float = DEFAULT_COVERAGE) -> ScheduleOutcome:
    if not model.phases:
        raise RegmixError("--model: fitted on single mixtures (no weight/p<k>/<domain> columns); use it without phases")
    coverage = check_coverage(coverage)
    if constraints.prior_pull:
        raise RegmixError("prior_pull: not supported for schedules yet; drop it from the constraints (per-phase "
                          "min/max bound how far a phase may move)")
    t0 = time.perf_counter()
    names = list(model.phases["domains"])
    study_mix = study_base_mixture(study) if study is not None else None
    constraints = constraints.named_for(names)
    tokens, token_source = TokenSources(base, study_mix, study).resolve(constraints, names)
    label = "--base-mixture"
    if base is None and study_mix is not None:
        base, label = study_mix, f"--study {study} base_mixture"
    space = schedule_space(model, constraints, tokens)
    if base is None:  # the model's prior is over the concatenated columns: average the phases
        K = space.K
        prior = np.array([model.prior[f"p{k}/{d}"] for k in range(K) for d in names]).reshape(K, -1).sum(axis=0)
        prior, prior_source = prior / prior.sum(), "mean of the proxy runs' phase weights"
    else:
        missing = [d for d in names if d not in base.names]
        if missing:
            raise RegmixError(f"{label}: no domain {missing[0]!r}; it must name every domain the model was fit on")
        prior, prior_source = np.array([base.weight_of(d) for d in names]), f"the {label} weights"
    smooth = cfg.mode == "exact" or (cfg.mode == "auto" and is_smooth(model.predictor))
    if cfg.mode == "exact" and not is_smooth(model.predictor):
        raise RegmixError(f"--mode exact: predictor {model.chosen!r} is not smooth (trees); use --mode sample")
    single, _, ev1 = _search(model, space, prior, cfg, tied=True, smooth=smooth, extra_starts=[])
    x, method, ev2 = _search(model, space, prior, cfg, tied=False, smooth=smooth,
                             extra_starts=[np.tile(single, space.K)])
    K, D = space.K, len(names)
    W = np.vstack([project_bounded_simplex(w, space.lo, space.hi)[0] for w in x.reshape(K, D)])
    pred = model.predictor.predict
    p_sched = float(pred(W.reshape(1, -1))[0])
    p_single = float(pred(np.tile(single, K)[None, :])[0])
    sign = model.target.sign
    if sign * p_single < sign * p_sched:  # the repeated single mixture is itself a schedule: never report a worse one
        W, p_sched = np.tile(single, (K, 1)), p_single
    gain = _gain(model, p_single, p_sched, coverage)
    seconds = time.perf_counter() - t0
    baselines = {"prior_every_phase": float(pred(np.tile(prior, K)[None, :])[0]),
                 "best_single_mixture": p_single,
                 "best_proxy_run": {"run_id": model.best_run["run_id"], "actual": model.best_run["target"]}}
    starts = [float(s) for s in model.phases["starts"]]
    prov = {
        "tool": "regmix optimize",
        "kind": "schedule",
        "predictor": model.chosen,
        "predictor_reason": model.reason,
        "target": model.target.expr,
        "direction": model.target.direction,
        "cv": model.cv,
        "cv_spearman": model.cv_score("spearman"),
        "phase_starts": starts,
        "phase_lengths": space.lengths.tolist(),
        "predicted_target": p_sched,
        "best_single_mixture": {n: float(w) for n, w in zip(names, single)},
        "predicted_gain_over_best_single_mixture": gain,
        "baselines": baselines,
        "search": {"method": method, "evaluations": ev1 + ev2, "seconds": round(seconds, 3), "seed": cfg.seed,
                   "n_samples": cfg.n_samples, "top_k": cfg.top_k},
        "constraints": constraints.to_dict(),
        **({"token_sources": token_source} if constraints.target_tokens is not None else {}),
        "exposure": {n: float(e) for n, e in zip(names, space.exposure(W.reshape(1, -1))[0])},
        "prior": {n: float(p) for n, p in zip(names, prior)},
        "prior_source": prior_source,
        "n_runs": model.n_runs,
    }
    phases = []
    for k in range(K):
        weights = {n: float(w) for n, w in zip(names, W[k])}
        if base is not None:
            mix = Mixture.from_weights(weights, template=base, name=f"{name}-phase{k}")
        else:
            mix = Mixture.from_weights(weights, prefixes={d: [d] for d in names}, name=f"{name}-phase{k}")
        phases.append(mix.with_provenance(**prov, phase=k, phase_start=starts[k]))
    return ScheduleOutcome(phases, W, single, p_sched, p_single, gain, space, method, seconds, prov)


def _gain(model: FittedModel, p_single: float, p_sched: float, coverage: float) -> dict[str, Any]:
    gain = model.target.sign * (p_single - p_sched)
    out: dict[str, Any] = {"predicted": gain, "meaning": "how much better the schedule's predicted target is than "
                           f"the best single mixture's ({model.target.better}; positive: the schedule is better)"}
    oof = model.oof.get(model.chosen)
    if oof is None:
        return out
    each = (1 + coverage) / 2
    iv = ConformalInterval.from_residuals(np.asarray(oof, float) - np.asarray(model.y, float), each)
    finite = np.isfinite(iv.half_width)
    out["interval"] = {
        "coverage": coverage,
        "lower": gain - 2 * iv.half_width if finite else None,
        "upper": gain + 2 * iv.half_width if finite else None,
        "method": f"split-conformal half-width at {each:.3g} on each prediction, doubled (union bound: the "
                  f"difference holds at >= {coverage:.3g}); conservative",
        "calibration_runs": iv.n_calibration,
    }
    return out


def write_schedule(outcome: ScheduleOutcome, path: str | Path) -> list[Path]:
    """The schedule YAML at ``path`` (phases as fractions of training), ``phase<k>.json`` beside it and the figure
    ``<stem>.png`` of both phases' weights against the best single mixture. Everything is built and checked
    before the first file is written."""
    import yaml

    from regmix_plugin.io import atomic_write_text
    from regmix_plugin.schedule import Schedule

    path = Path(path)
    folder = path.parent
    starts = outcome.provenance["phase_starts"]
    doc = {"phases": [{"fraction": s, "mixture": f"phase{k}.json"} for k, s in enumerate(starts)]}
    Schedule.from_dict(doc, folder)
    fig = _figure(outcome)
    folder.mkdir(parents=True, exist_ok=True)
    written = [m.save(folder / f"phase{k}.json") for k, m in enumerate(outcome.phases)]
    written.append(atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False)))
    from regmix_plugin.report.builder import save_figure

    written.append(save_figure(fig, path.with_suffix(".png")))
    return written


def _figure(outcome: ScheduleOutcome):
    from regmix_plugin.report.builder import new_figure

    names = outcome.space.names
    K = len(outcome.phases)
    fig = new_figure(max(6.0, 0.45 * len(names)), 4.0)
    ax = fig.add_subplot(111)
    x = np.arange(len(names))
    width = 0.8 / (K + 1)
    starts = outcome.provenance["phase_starts"] + [1.0]
    for k in range(K):
        ax.bar(x + (k - K / 2) * width, outcome.weights[k], width,
               label=f"phase {k} ({starts[k]:.0%}-{starts[k + 1]:.0%})")
    ax.bar(x + (K - K / 2) * width, outcome.single, width, label="best single mixture", color="0.6")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("weight")
    g = outcome.gain
    iv = g.get("interval") or {}
    span = f" [{iv['lower']:.4f}, {iv['upper']:.4f}]" if iv.get("lower") is not None else ""
    ax.set_title(f"predicted gain over the best single mixture {g['predicted']:.4f}{span}", fontsize=9)
    ax.legend(fontsize=7)
    return fig
