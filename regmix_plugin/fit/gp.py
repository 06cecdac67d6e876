"""Gaussian process on log-weight features with a ridge mean: the small-sample ranker.

``y = ridge(phi(w)) + f(phi(w)) + noise`` with ``phi(w) = log(w + eps)`` (and ``sqrt(w)``), ``f`` a GP with
an ARD RBF kernel whose hyperparameters maximise the marginal likelihood from several starts. The ridge
mean carries the near-monotone "more of a related domain helps" trend that the exponential law also
encodes; the GP adds the interactions that trees find, without their staircase. Smooth, so exact
optimisation over the simplex works on it, and it gives a predictive standard deviation.
"""

from __future__ import annotations

import warnings

import numpy as np

from regmix_plugin.errors import check_choice
from regmix_plugin.fit.base import Predictor, State
from regmix_plugin.fit.features import FEATURE_MAPS, ridge_gcv, transform
from regmix_plugin.fit.registry import register

_ALPHAS = np.logspace(-4, 3, 15)
MEANS = ("ridge", "log-law")


def _kernel(n_features: int):
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    return ConstantKernel(1.0, (1e-3, 1e2)) * RBF(np.full(n_features, 3.0), (1e-2, 1e3)) + WhiteKernel(1e-2, (1e-5, 1.0))


@register
class GPPredictor(Predictor):
    name = "gp"
    smooth = True

    def __init__(
        self, mean: str = "ridge", features: str = "log", eps: float = 0.03, n_restarts: int = 1, random_state: int = 0
    ) -> None:
        self.mean = mean  # "ridge" on the features, or the "log-law" (a GP with a mixing-law mean)
        self.features = features
        self.eps = eps
        self.n_restarts = n_restarts
        self.random_state = random_state

    def _phi(self, X: np.ndarray) -> np.ndarray:
        return transform(X, self.features, self.eps)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        check_choice(f"{self.name}.features", self.features, FEATURE_MAPS)
        check_choice(f"{self.name}.mean", self.mean, MEANS)
        F = self._phi(X)
        if self.mean == "log-law":
            from regmix_plugin.fit.mixing_law import LogLawPredictor

            self.law_ = LogLawPredictor(features="log", eps=self.eps, random_state=self.random_state).fit(X, y)
            self.coef_, self.intercept_, self.alpha_ = np.zeros(F.shape[1]), 0.0, 0.0
        else:
            self.law_ = None
            self.coef_, self.intercept_, self.alpha_ = ridge_gcv(F, y, _ALPHAS)
        r = y - self._mean(X, F)
        self.y_scale_ = float(max(np.std(r), 1e-12))
        from sklearn.gaussian_process import GaussianProcessRegressor

        gpr = GaussianProcessRegressor(_kernel(F.shape[1]), n_restarts_optimizer=int(self.n_restarts), random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a bound is expected, not an error
            gpr.fit(F, r / self.y_scale_)
        self.theta_ = np.asarray(gpr.kernel_.theta, dtype=float)
        self.F_train_ = F
        self.r_train_ = r / self.y_scale_
        self._gpr = gpr

    def _rebuild(self) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor

        kernel = _kernel(self.F_train_.shape[1]).clone_with_theta(self.theta_)
        self._gpr = GaussianProcessRegressor(kernel, optimizer=None).fit(self.F_train_, self.r_train_)

    def _mean(self, X: np.ndarray, F: np.ndarray) -> np.ndarray:
        base = F @ self.coef_ + self.intercept_
        return base + self.law_.predict(X) if self.law_ is not None else base

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_std(X)[0]

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        X = np.asarray(X, dtype=float)
        F = self._phi(X)
        mean, std = self._gpr.predict(F, return_std=True)
        return self._mean(X, F) + mean * self.y_scale_, std * self.y_scale_

    def _get_state(self) -> State:
        return State(
            meta={"intercept": self.intercept_, "alpha": self.alpha_, "y_scale": self.y_scale_},
            arrays={"coef": self.coef_, "theta": self.theta_, "F_train": self.F_train_, "r_train": self.r_train_},
            children={"law": self.law_} if self.law_ is not None else {},
        )

    def _set_state(self, state: State) -> None:
        self.intercept_ = float(state.meta["intercept"])
        self.alpha_ = float(state.meta["alpha"])
        self.y_scale_ = float(state.meta["y_scale"])
        self.coef_ = np.asarray(state.arrays["coef"], dtype=float)
        self.theta_ = np.asarray(state.arrays["theta"], dtype=float)
        self.F_train_ = np.asarray(state.arrays["F_train"], dtype=float)
        self.r_train_ = np.asarray(state.arrays["r_train"], dtype=float)
        self.law_ = state.children.get("law")
        self._rebuild()
