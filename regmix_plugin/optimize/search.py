"""Search the simplex for the mixture with the lowest predicted target.

Two modes:

- ``sample`` (RegMix's): draw a large Dirichlet pool around the prior, predict every mixture, and average
  the top-k. Works for any predictor, including trees.
- ``exact``: for smooth predictors. Where the predictor solves its own bounded-simplex problem in closed
  form (``minimize_on_simplex``: eff-law, whose optimum is a water-filling) and no prior pull is asked
  for, that answer is the global optimum and no search runs. Otherwise, from several starts (the prior and
  the best of a small pool): SLSQP on the bounded simplex up to ``slsqp_max_domains`` domains, projected
  gradient descent above that (SLSQP's dense quadratic subproblem grows as D^3). Gradients are analytic
  where the predictor has ``gradient`` and otherwise finite differences evaluated as ONE batched
  ``predict`` call of D+1 mixtures, which is what makes 1000 domains cheap.

A target to maximise (an accuracy) is searched as the minimum of its negation (:class:`Negated`): the same
code, the predictor untouched, the reported prediction in the target's own units; a closed-form minimiser
does not apply then (it minimises the law), so the exact mode searches.

An optional pull toward the prior (KL(w || prior) or negative entropy) is added to the objective.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from regmix_plugin.errors import ConfigError
from regmix_plugin.fit.base import Predictor, is_smooth
from regmix_plugin.optimize.search_config import SearchConfig

@dataclass
class SearchResult:
    weights: np.ndarray
    predicted: float
    mode: str
    active: dict[str, str] = field(default_factory=dict)  # domain -> "at min" / "at max (token cap)" ...
    evaluations: int = 0
    method: str = ""  # how: "closed form", "SLSQP", "projected gradient" or "top-k average"

    @property
    def label(self) -> str:
        return f"{self.mode} ({self.method})" if self.method else self.mode


def project_bounded_simplex(V: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of V onto {w : sum w = 1, lo <= w <= hi} (bisection on the shift)."""
    V = np.atleast_2d(V)
    a = (V - hi).min(axis=1) - 1.0
    b = (V - lo).max(axis=1) + 1.0
    for _ in range(60):
        tau = 0.5 * (a + b)
        s = np.clip(V - tau[:, None], lo, hi).sum(axis=1)
        a = np.where(s > 1, tau, a)
        b = np.where(s > 1, b, tau)
    return np.clip(V - 0.5 * (a + b)[:, None], lo, hi)


def dirichlet_pool(prior: np.ndarray, n: int, strengths, seed: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """RegMix's pool: Dirichlet(prior * s) for strengths s on a log grid, projected onto the bounds."""
    rng = np.random.default_rng(seed)
    p = np.clip(prior, 1e-6, None)
    p = p / p.sum()
    s = rng.choice(np.asarray(strengths, float), size=n) * len(p)
    # Gamma draws with per-row concentration = Dirichlet draws, without a Python loop over rows.
    G = rng.gamma(np.outer(s, p))
    G = np.where(G.sum(axis=1, keepdims=True) > 0, G, p)
    W = G / G.sum(axis=1, keepdims=True)
    if np.any(lo > 0) or np.any(hi < 1):
        W = project_bounded_simplex(W, lo, hi)
    return W


def _pull(W: np.ndarray, prior: np.ndarray, kind: str) -> np.ndarray:
    Wc = np.clip(W, 1e-12, None)
    if kind == "entropy":
        return np.sum(Wc * np.log(Wc), axis=1)  # negative entropy: lower = more spread out
    return np.sum(Wc * np.log(Wc / np.clip(prior, 1e-12, None)), axis=1)


def objective(model: Predictor, W: np.ndarray, prior: np.ndarray, cfg: SearchConfig) -> np.ndarray:
    # The search builds every W itself (finite, right width; `search` checks the model once), so it skips
    # predict()'s per-call input validation, which costs more than a small law's evaluation.
    f = np.asarray(model._predict(W), dtype=float).reshape(-1)
    if cfg.pull_strength > 0:
        f = f + cfg.pull_strength * _pull(W, prior, cfg.pull_kind)
    return f


def _gradient(model: Predictor, x: np.ndarray, prior: np.ndarray, cfg: SearchConfig, f0: float) -> np.ndarray:
    grad_fn = getattr(model, "gradient", None)
    g = None
    if callable(grad_fn):
        try:
            g = np.asarray(grad_fn(x), float)
        except NotImplementedError:
            g = None
    if g is None:
        h = 1e-5
        pts = x[None, :] + h * np.eye(len(x))
        g = (model.predict(pts) - (f0 if cfg.pull_strength == 0 else model.predict(x[None, :])[0])) / h
    if cfg.pull_strength > 0:
        xc = np.clip(x, 1e-12, None)
        base = np.log(xc) + 1 if cfg.pull_kind == "entropy" else np.log(xc / np.clip(prior, 1e-12, None)) + 1
        g = g + cfg.pull_strength * base
    return g


def _descend(model, x, prior, lo, hi, cfg) -> tuple[np.ndarray, float, int]:
    """Projected gradient descent with backtracking (Armijo) on the bounded simplex."""
    f = objective(model, x[None, :], prior, cfg)[0]
    step, evals = 1.0, 1
    for _ in range(cfg.max_iter):
        g = _gradient(model, x, prior, cfg, f)
        evals += len(x)
        improved = False
        while step > 1e-10:
            xn = project_bounded_simplex(x - step * g, lo, hi)[0]
            fn = objective(model, xn[None, :], prior, cfg)[0]
            evals += 1
            if fn <= f - 1e-4 * float(g @ (x - xn)):
                improved = True
                break
            step *= 0.5
        if not improved or np.max(np.abs(xn - x)) < 1e-9:
            break
        x, f, step = xn, fn, step * 2.0
    return x, f, evals


def _slsqp(model, x, prior, lo, hi, cfg) -> tuple[np.ndarray, float, int]:
    from scipy.optimize import minimize

    count = [0]

    def fun(w):
        count[0] += 1
        f = objective(model, w[None, :], prior, cfg)[0]
        return f, _gradient(model, w, prior, cfg, f)

    r = minimize(fun, x, jac=True, method="SLSQP", bounds=list(zip(lo, hi)),
                 constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                 options={"maxiter": cfg.max_iter, "ftol": 1e-12})
    w = project_bounded_simplex(r.x, lo, hi)[0]  # remove SLSQP's tiny bound/sum violations
    return w, objective(model, w[None, :], prior, cfg)[0], count[0]


def _active(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str], source: dict[str, str]) -> dict[str, str]:
    out = {}
    for i, d in enumerate(names):
        if source.get(d) == "fixed":
            out[d] = "fixed"
        elif hi[i] < 1 and w[i] >= hi[i] - 1e-6:
            out[d] = f"at upper bound ({source.get(d, 'max')})"
        elif lo[i] > 0 and w[i] <= lo[i] + 1e-6:
            out[d] = "at min"
    return out


class Negated:
    """A fitted predictor seen upside down, so that minimising it maximises the target."""

    def __init__(self, model: Predictor) -> None:
        self.model = model
        self.name = model.name
        if callable(getattr(model, "gradient", None)):
            self.gradient = lambda x: -np.asarray(model.gradient(x), float)

    def is_smooth(self) -> bool:
        return is_smooth(self.model)

    def _predict(self, X):
        return -np.asarray(self.model._predict(X), float)

    def predict(self, X):
        return -np.asarray(self.model.predict(X), float)


def search(
    model: Predictor,
    names: list[str],
    prior: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    cfg: SearchConfig,
    source: dict[str, str] | None = None,
    maximize: bool = False,
) -> SearchResult:
    """Find the mixture with the lowest (``maximize``: highest) predicted target, plus pull, within the bounds."""
    if maximize:
        res = search(Negated(model), names, prior, lo, hi, cfg, source)
        res.predicted = -res.predicted
        return res
    model.predict(np.asarray(prior, float)[None, :])  # one checked call: fitted, and the widths agree
    smooth = is_smooth(model)
    mode = cfg.mode if cfg.mode != "auto" else ("exact" if smooth else "sample")
    if mode == "exact" and not smooth:
        raise ConfigError(f"--mode exact: predictor {model.name!r} is not smooth (trees); use --mode sample or a smooth predictor")
    if mode == "exact" and cfg.pull_strength == 0:
        w = _closed_form(model, lo, hi)
        if w is not None:
            return _result(model, w, lo, hi, names, source, mode, 1, "closed form")
    n_pool = cfg.n_samples if mode == "sample" else min(cfg.n_samples, cfg.start_pool)
    pool = dirichlet_pool(prior, n_pool, cfg.strengths, cfg.seed, lo, hi)
    vals = objective(model, pool, prior, cfg)
    order = np.argsort(vals, kind="stable")
    if mode == "sample":
        w = pool[order[: cfg.top_k]].mean(axis=0)
        w = project_bounded_simplex(w, lo, hi)[0]
        evals, method = len(pool), "top-k average"
    else:
        # The best pool sample first, then the prior, then the next best samples.
        starts = [pool[order[0]], project_bounded_simplex(prior, lo, hi)[0]] + [pool[i] for i in order[1:]]
        starts = starts[: max(cfg.n_starts, 1)]
        best, evals = None, len(pool)
        local = _slsqp if len(names) <= cfg.slsqp_max_domains else _descend
        method = "SLSQP" if local is _slsqp else "projected gradient"
        # Each step is tiny linear algebra: BLAS threads cost more to wake than they save (4x here).
        with _blas_controller().limit(limits=1, user_api="blas"):
            for x0 in starts:
                x, f, e = local(model, x0, prior, lo, hi, cfg)
                evals += e
                if best is None or f < best[1]:
                    best = (x, f)
        w = best[0]
    return _result(model, w, lo, hi, names, source, mode, evals, method)


def _closed_form(model: Predictor, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    solve = getattr(model, "minimize_on_simplex", None)
    w = solve(lo, hi) if callable(solve) else None
    if w is None or not np.all(np.isfinite(w)) or abs(float(np.sum(w)) - 1.0) > 1e-6:
        return None  # no closed form for this fit (or a numerically failed one): search instead
    return np.asarray(w, float)


def _result(model, w, lo, hi, names, source, mode, evals, method) -> SearchResult:
    # Round away float dust (1e-17 weights) so the file and report say 0 where the search meant 0.
    w = np.where(w < 1e-9, 0.0, w)
    w = w / w.sum()
    if np.any(w < lo - 1e-12) or np.any(w > hi + 1e-12):
        w = project_bounded_simplex(w, lo, hi)[0]
    pred = float(model.predict(w[None, :])[0])
    return SearchResult(w, pred, mode, _active(w, lo, hi, names, source or {}), evals, method)


@functools.cache
def _blas_controller():
    # Scanning the loaded libraries takes ~50 ms; do it once per process.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
