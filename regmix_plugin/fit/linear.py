"""Linear regression on the mixture weights (RegMix's linear baseline): OLS, or ridge with ``alpha > 0``."""

from __future__ import annotations

import numpy as np

from regmix_plugin.fit.base import FitError, Predictor, State, one_blas_thread
from regmix_plugin.fit.registry import register


@register
class LinearPredictor(Predictor):
    """``y = b + X @ w``. The coefficients are the linear law whose interaction heatmap the report draws."""

    name = "linear"
    smooth = True
    flexibility = 1

    def __init__(self, alpha: float = 0.0, random_state: int = 0) -> None:
        self.alpha = alpha
        self.random_state = random_state  # unused (closed form); kept so every predictor takes it

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise FitError(f"linear.alpha: {self.alpha!r} must be a number >= 0 (0 = OLS, > 0 = ridge)")
        xm, ym = X.mean(axis=0), y.mean()
        Xc, yc = X - xm, y - ym
        if self.alpha > 0:
            A = Xc.T @ Xc + self.alpha * np.eye(X.shape[1])
            coef = np.linalg.solve(A, Xc.T @ yc)
        else:
            # Weights sum to 1, so the columns are collinear with the intercept: lstsq takes the
            # minimum-norm solution, which predicts the same on the simplex as any other.
            with one_blas_thread():  # small matrices: a second BLAS thread only adds wake-ups (fit/base.py)
                coef = np.linalg.lstsq(Xc, yc, rcond=None)[0]
        self.coef_ = coef
        self.intercept_ = float(ym - xm @ coef)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_ + self.intercept_

    def gradient(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return np.array(self.coef_, dtype=float)

    def _get_state(self) -> State:
        return State(meta={"intercept": self.intercept_}, arrays={"coef": self.coef_})

    def _set_state(self, state: State) -> None:
        self.coef_ = np.asarray(state.arrays["coef"], dtype=float)
        self.intercept_ = float(state.meta["intercept"])
