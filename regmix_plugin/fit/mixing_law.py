"""Data Mixing Laws (arXiv 2403.16952): ``L(r) = c + k * exp(t . r)`` for one target.

Fit by robust least squares (Huber loss) from several starts; ``c`` and ``k`` are fit as ``log c`` and
``log k`` so both stay positive, which keeps the law a decreasing-to-a-floor exponential that transfers
across model scale better than trees do.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import spearmanr

from regmix_plugin.errors import check_choice
from regmix_plugin.fit.base import FitError, Predictor, State, one_blas_thread
from regmix_plugin.fit.cv import kfold_indices, out_of_fold
from regmix_plugin.fit.features import FEATURE_MAPS, transform
from regmix_plugin.fit.registry import register


# Domains above which each trust-region step is solved iteratively (lsmr) instead of by an SVD. With BLAS on
# one thread the SVD is cheap up to a few hundred domains, and lsmr crawls on the log-law's ill-conditioned
# steps: 2-start fits, exact vs lsmr, 64 domains x 410 runs 0.12 s vs 15.3 s (log) and 0.16 s vs 3.0 s
# (identity); 100 x 1024 1.2 s vs 7.9 s (log), 0.7 s vs 0.3 s (identity); 200 x 1024 0.9 s vs 4.0 s (log),
# 2.7 s vs 0.5 s (identity); 400 x 2048 (identity) 20.8 s vs 3.2 s. So lsmr only above 200 domains.
LSMR_ABOVE = 200


def exp_law(p: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and exp term of the law at each row of X; p = [log c, log k, t_1..t_D]. A 2-D ``p`` (one such
    row per law) gives every law at once, one column each."""
    e = np.exp(np.clip(X @ p[..., 2:].T, -50.0, 50.0))
    return np.exp(p[..., 0]) + np.exp(p[..., 1]) * e, e


@register
class MixingLawPredictor(Predictor):
    name = "mixing-law"
    smooth = True
    flexibility = 1

    def __init__(
        self,
        features: str = "identity",
        eps: float = 0.01,
        n_starts: int = 8,
        huber_scale: float = 0.5,
        max_nfev: int = 2000,
        random_state: int = 0,
    ) -> None:
        self.features = features  # "identity" is the paper's law; see LogLawPredictor
        self.eps = eps
        self.n_starts = n_starts
        self.huber_scale = huber_scale  # Huber's delta, in units of the target's standard deviation
        self.max_nfev = max_nfev
        self.random_state = random_state

    def _phi(self, X: np.ndarray) -> np.ndarray:
        return transform(X, self.features, getattr(self, "eps_", self.eps))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        check_choice(f"{self.name}.features", self.features, FEATURE_MAPS)
        X = self._phi(X)
        if int(self.n_starts) < 1:
            raise FitError(f"mixing-law.n_starts: {self.n_starts!r} must be >= 1")
        if np.min(y) <= 0:
            raise FitError("mixing-law: the target has values <= 0; the law c + k*exp(t.r) needs a positive target (a loss)")
        rng = np.random.default_rng(self.random_state)
        D = X.shape[1]
        scale = float(self.huber_scale) * max(float(np.std(y)), 1e-8)

        def resid(p):
            return exp_law(p, X)[0] - y

        def jac(p):
            e = np.exp(np.clip(X @ p[2:], -50.0, 50.0))
            k = np.exp(p[1])
            return np.column_stack([np.full(len(y), np.exp(p[0])), k * e, (k * e)[:, None] * X])

        best = None
        for s in range(int(self.n_starts)):
            c0 = float(np.min(y)) * (0.5 if s == 0 else rng.uniform(0.2, 0.95))
            k0 = max(float(np.mean(y)) - c0, 1e-3)
            t0 = np.zeros(D) if s == 0 else rng.normal(0.0, 1.0, D)
            p0 = np.r_[np.log(c0), np.log(k0), t0]
            with warnings.catch_warnings(), one_blas_thread():
                warnings.simplefilter("ignore", RuntimeWarning)
                # lsmr keeps each step O(n*D) instead of an O(n*D^2) SVD: what makes 1000 domains tractable.
                solver = "lsmr" if D > LSMR_ABOVE else "exact"
                # lsmr's default tolerances (1e-6) give inexact Gauss-Newton steps and a crawl of ~750
                # iterations per start at 1000 domains; solving each step tightly converges in ~80.
                opts = {"atol": 1e-12, "btol": 1e-12} if solver == "lsmr" else {}
                r = least_squares(resid, p0, jac=jac, loss="huber", f_scale=scale, max_nfev=int(self.max_nfev),
                                  method="trf", tr_solver=solver, tr_options=opts)
            if np.all(np.isfinite(r.x)) and (best is None or r.cost < best.cost):
                best = r
        if best is None:
            raise FitError("mixing-law: every start diverged; check the target for outliers or use --predictor linear")
        self.log_c_ = float(best.x[0])
        self.log_k_ = float(best.x[1])
        self.t_ = np.asarray(best.x[2:], dtype=float)
        self.cost_ = float(best.cost)

    @property
    def params_(self) -> np.ndarray:
        return np.r_[self.log_c_, self.log_k_, self.t_]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return exp_law(self.params_, self._phi(X))[0]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d L / d r at one mixture ``x`` (chain rule through the feature map; analytic for identity and log)."""
        self._check_fitted()
        x = np.asarray(x, float)
        scale = np.exp(self.log_k_) * np.exp(np.clip(self._phi(x[None, :])[0] @ self.t_, -50.0, 50.0))
        if self.features == "identity":
            return scale * self.t_
        if self.features == "log":
            return scale * self.t_ / (x + getattr(self, "eps_", self.eps))
        raise NotImplementedError("gradient: no analytic gradient for this feature map; the optimiser uses differences")

    def _get_state(self) -> State:
        meta = {"log_c": self.log_c_, "log_k": self.log_k_, "cost": self.cost_}
        if hasattr(self, "eps_"):
            meta["eps"] = self.eps_
        return State(meta=meta, arrays={"t": self.t_})

    def _set_state(self, state: State) -> None:
        if "eps" in state.meta:
            self.eps_ = float(state.meta["eps"])
        self.log_c_ = float(state.meta["log_c"])
        self.log_k_ = float(state.meta["log_k"])
        self.cost_ = float(state.meta["cost"])
        self.t_ = np.asarray(state.arrays["t"], dtype=float)


@register
class LogLawPredictor(MixingLawPredictor):
    """The mixing law on ``log(r + eps)``: ``L = c + k * prod_i (r_i + eps)^a_i``.

    A power law in each domain's share rather than an exponential: the first percent of a related domain
    helps far more than the fiftieth, which is what the proxy runs show. ``eps`` (the share below which a
    domain counts as absent) is chosen from ``eps_grid`` by K-fold Spearman rho on the training runs when
    ``eps="cv"``: the best floor differs between targets (0.03 for web text, 0.01 for code and arXiv on
    RegMix's data). Ranks unseen mixtures better than the exponential law from 64 runs (docs/predictors.md).
    """

    name = "log-law"

    def __init__(
        self,
        features: str = "log",
        eps: float | str = "cv",
        eps_grid: tuple[float, ...] | list[float] = (0.01, 0.03, 0.1),
        cv_folds: int = 5,
        n_starts: int = 4,
        huber_scale: float = 0.5,
        max_nfev: int = 2000,
        random_state: int = 0,
    ) -> None:
        super().__init__(features, eps, n_starts, huber_scale, max_nfev, random_state)
        self.eps_grid = eps_grid
        self.cv_folds = cv_folds

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.eps == "cv":
            folds = self.oof_folds(len(y))
            P = np.column_stack([out_of_fold(lambda s=s: MixingLawPredictor(**s[1]), X, y, folds)
                                 for s in self.oof_specs()])
            self.fit_from_oof(X, y, P)
            return
        if isinstance(self.eps, (int, float)) and self.eps > 0:
            self.eps_ = float(self.eps)
        else:
            raise FitError(f"log-law.eps: {self.eps!r} must be a positive number or 'cv'")
        super()._fit(X, y)

    # ---- the choice of eps on out-of-fold predictions (shared with `auto`, fit/oof.py) -------------
    def oof_specs(self) -> list[tuple[str, dict]]:
        """The laws at each floor of ``eps_grid`` whose out-of-fold rho chooses ``eps`` (none for a fixed eps).
        Half the starts: they only rank the floors."""
        if self.eps != "cv":
            return []
        grid = [float(e) for e in self.eps_grid]
        if not grid or min(grid) <= 0:
            raise FitError(f"log-law.eps_grid: {self.eps_grid!r} must list positive numbers")
        return [("mixing-law", {"features": self.features, "eps": e, "n_starts": max(1, int(self.n_starts) // 2),
                                "huber_scale": self.huber_scale, "max_nfev": self.max_nfev,
                                "random_state": self.random_state}) for e in grid]

    def oof_folds(self, n: int) -> list[np.ndarray]:
        return kfold_indices(n, min(int(self.cv_folds), n), self.random_state)

    @staticmethod
    def select(P: np.ndarray, y: np.ndarray) -> int:
        """The column of ``P`` (one per floor) whose out-of-fold predictions rank ``y`` best."""
        rhos = [spearmanr(P[:, j], y)[0] if np.ptp(P[:, j]) > 0 else -np.inf for j in range(P.shape[1])]
        return int(np.nanargmax(rhos))

    @staticmethod
    def combine(selected: int, P: np.ndarray) -> np.ndarray:
        return P[:, selected]

    def fit_from_oof(self, X: np.ndarray, y: np.ndarray, P: np.ndarray) -> "LogLawPredictor":
        """``fit(X, y)`` given the out-of-fold predictions of :meth:`oof_specs` on :meth:`oof_folds`."""
        self.eps_ = self.oof_specs()[self.select(P, y)][1]["eps"]
        self.n_features_in_ = np.asarray(X).shape[1]
        MixingLawPredictor._fit(self, X, y)
        return self
