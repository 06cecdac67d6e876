"""``joint-law``: the log-law fit jointly with the other metrics of the same runs, sharing each domain's floor.

The log-law ``L = c + k * prod_d (r_d + eps)^a_d`` has one floor ``eps`` for every domain, picked (or
blended) per target from a few values; with 64 runs that choice is noisy. The floor is the share below
which a training domain counts as absent, a property of the *training domain* more than of the metric, so
every validation loss of the same runs carries evidence about it. ``joint-law`` fits one law per column of
``Y`` (the target first, then auxiliary metrics such as the other domains' validation losses), each with
its own ``c``, ``k`` and exponents, but one vector of per-domain floors ``eps_d`` shared by all columns:
13 columns x 64 runs estimate 17 floors instead of 64 runs choosing one. Prediction uses the target's
law only, so new mixtures need no auxiliary metrics; it is still a smooth law with an analytic gradient.

Chosen by CV on RegMix's train runs only; docs/predictors.md ("joint-law") has the scores against
``law-blend`` and against the same per-domain floors fit to the target alone: the gain comes from sharing them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from regmix_plugin.fit.base import FitData, FitError, Predictor, State, check_X, one_blas_thread
from regmix_plugin.fit.mixing_law import MixingLawPredictor, exp_law
from regmix_plugin.fit.registry import register

EPS_BOUNDS = (1e-3, 0.5)


def _laws(le: np.ndarray, P: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column's law at each row of X, with log(r + eps) and the exp term; P rows = [log c, log k, a_1..a_D]."""
    L = np.log(X + np.exp(le))
    value, E = exp_law(P, L)
    return value, L, E


@register
class JointLawPredictor(Predictor):
    """``fit(X, Y)``: ``Y[:, 0]`` is the target, the other columns auxiliary metrics of the same runs.

    A 1-D ``y`` fits the target alone (per-domain floors from one column: no better than ``law-blend``);
    give the auxiliary columns to get the gain. ``eps_inits`` are the starting floors of the joint fit; the
    fit with the lowest loss is kept (on 8 RegMix subsets of 64 runs, a start at 0.1 stalled in a worse
    optimum on all 8, one at 0.03 on 2, one at 0.01 on none).
    """

    name = "joint-law"
    smooth = True
    flexibility = 2
    needs = frozenset({"auxiliary"})

    def __init__(
        self,
        eps_inits: tuple[float, ...] | list[float] = (0.01, 0.03),
        n_starts: int = 4,
        huber_scale: float = 0.5,
        max_nfev: int = 1000,
        random_state: int = 0,
    ) -> None:
        self.eps_inits = eps_inits
        self.n_starts = n_starts  # starts of each column's single law, which seeds the joint fit
        self.huber_scale = huber_scale
        self.max_nfev = max_nfev
        self.random_state = random_state

    def _as_data(self, X: Any, Y: Any) -> FitData:
        """``fit(X, Y)``: ``Y[:, 0]`` is the target, the other columns auxiliary metrics of the same runs."""
        X = check_X(X, self.name)
        Y = np.asarray(Y, dtype=float)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise FitError(f"{self.name}.fit: X has {X.shape[0]} rows but Y has shape {Y.shape}; give one row per run "
                           "(target first, then auxiliary metric columns)")
        return FitData(X, Y[:, 0], auxiliary=Y[:, 1:])

    def _fit_data(self, data: FitData, listener: Any = None) -> None:
        aux = np.zeros((len(data.y), 0)) if data.auxiliary is None else np.asarray(data.auxiliary, dtype=float)
        Y = np.column_stack([data.y, aux])
        bad = [j for j in range(Y.shape[1]) if not np.all(np.isfinite(Y[:, j])) or np.min(Y[:, j]) <= 0]
        if bad:
            raise FitError(f"{self.name}.fit: Y column(s) {bad} have non-finite or non-positive values; "
                           "drop failed runs and give positive metrics (losses)")
        inits = [float(e) for e in self.eps_inits]
        if not inits or not all(EPS_BOUNDS[0] <= e <= EPS_BOUNDS[1] for e in inits):
            raise FitError(f"{self.name}.eps_inits: {self.eps_inits!r} must list floors in [{EPS_BOUNDS[0]}, {EPS_BOUNDS[1]}]")
        self._fit_joint(data.X, Y, inits)

    def uses_auxiliary(self) -> bool:
        return True

    def _fit_joint(self, X: np.ndarray, Y: np.ndarray, inits: list[float]) -> None:
        n, D = X.shape
        T = Y.shape[1]
        sd = np.maximum(Y.std(axis=0), 1e-12)
        Z = Y / sd  # one Huber scale for every column

        def unpack(p):
            return p[:D], p[D:].reshape(T, D + 2)

        def resid(p):
            return (_laws(*unpack(p), X)[0] - Z).T.ravel()

        def jac(p):
            le, P = unpack(p)
            eps = np.exp(le)
            _, L, E = _laws(le, P, X)
            J = np.zeros((T * n, len(p)))
            deps = eps / (X + eps)  # d log(r + eps) / d log eps
            for j in range(T):
                ke = np.exp(P[j, 1]) * E[:, j]
                rows = slice(j * n, (j + 1) * n)
                J[rows, :D] = ke[:, None] * P[j, 2:] * deps
                c0 = D + j * (D + 2)
                J[rows, c0] = np.exp(P[j, 0])
                J[rows, c0 + 1] = ke
                J[rows, c0 + 2:c0 + 2 + D] = ke[:, None] * L
            return J

        lo = np.r_[np.full(D, np.log(EPS_BOUNDS[0])), np.full(T * (D + 2), -np.inf)]
        hi = np.r_[np.full(D, np.log(EPS_BOUNDS[1])), np.full(T * (D + 2), np.inf)]
        best = None
        for e0 in inits:
            # Seed: each column's own law at the common floor e0 (what the log-law fits).
            P0 = []
            for j in range(T):
                m = MixingLawPredictor("log", e0, int(self.n_starts), self.huber_scale, random_state=self.random_state)
                m.fit(X, Z[:, j])
                P0.append(m.params_)
            p0 = np.clip(np.r_[np.full(D, np.log(e0)), np.ravel(P0)], lo, hi)
            with warnings.catch_warnings(), one_blas_thread():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = least_squares(resid, p0, jac=jac, loss="huber", f_scale=float(self.huber_scale), bounds=(lo, hi),
                                  max_nfev=int(self.max_nfev), method="trf")
            if np.all(np.isfinite(r.x)) and (best is None or r.cost < best.cost):
                best = r
        if best is None:
            raise FitError(f"{self.name}: every start diverged; check the metrics for outliers or use --predictor law-blend")
        le, P = unpack(best.x)
        self.eps_ = np.exp(le)
        # Back to each column's units (c and k scale with its standard deviation). Row 0 is the target's law,
        # the only one predict uses; the auxiliary rows are kept so every column's law can be inspected.
        self.column_params_ = P + np.c_[np.log(sd), np.log(sd), np.zeros((T, D))]
        self.cost_ = float(best.cost)

    def predict_columns(self, X: Any) -> np.ndarray:
        """Every column's law at ``X``, shape (n, n_columns): column 0 is ``predict``, the rest the auxiliaries'."""
        self._check_fitted()
        X = check_X(X, self.name)
        if X.shape[1] != self.n_features_in_:
            raise FitError(f"{self.name}.predict: X has {X.shape[1]} domain columns but the model was fit on "
                           f"{self.n_features_in_}; give mixtures over the same domains in the same order")
        return _laws(np.log(self.eps_), self.column_params_, X)[0]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return _laws(np.log(self.eps_), self.column_params_[:1], X)[0][:, 0]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d L / d r at one mixture: k * prod(r + eps)^a * a_d / (r_d + eps_d), with the target's law."""
        self._check_fitted()
        x = np.asarray(x, float)
        log_k, t = self.column_params_[0, 1], self.column_params_[0, 2:]
        scale = np.exp(log_k) * np.exp(np.clip(np.log(x + self.eps_) @ t, -50.0, 50.0))
        return scale * t / (x + self.eps_)

    def _get_state(self) -> State:
        return State(meta={"cost": self.cost_}, arrays={"eps": self.eps_, "column_params": self.column_params_})

    def _set_state(self, state: State) -> None:
        self.cost_ = float(state.meta["cost"])
        self.eps_ = np.asarray(state.arrays["eps"], dtype=float)
        self.column_params_ = np.asarray(state.arrays["column_params"], dtype=float)
