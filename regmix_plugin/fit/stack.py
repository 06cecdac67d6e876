"""Stacking: a convex-ish combination of member predictors, weighted by their out-of-fold predictions.

Each member is cross-validated on the training runs; non-negative least squares on the out-of-fold
predictions gives the member weights; then every member is refit on all runs. This keeps what each model
is good at (the law's transfer, the GP's small-sample ranking, the trees' fit at scale) and lets the
data, not the test set, decide how much of each.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from regmix_plugin.fit.base import FitError, Predictor, State
from regmix_plugin.fit.cv import kfold_indices, out_of_fold
from regmix_plugin.fit.registry import register

# Train-only CV, 256 RegMix runs, 8 subsets, Pile-CC: eff-law + LightGBM 98.95, log-law + LightGBM 98.75
# (docs/predictors.md, "eff-law").
DEFAULT_MEMBERS = ("eff-law", "lightgbm")


@register
class StackPredictor(Predictor):
    name = "stack"
    smooth = False  # true only when every member is smooth; see `is_smooth`

    def __init__(
        self,
        members: tuple[str, ...] | list[str] = DEFAULT_MEMBERS,
        member_params: dict | None = None,
        n_splits: int = 5,
        random_state: int = 0,
    ) -> None:
        self.members = members
        self.member_params = member_params
        self.n_splits = n_splits
        self.random_state = random_state

    def _specs(self, oof: bool = False) -> list[tuple[str, dict]]:
        """(registry name, hyperparameters) of each member; ``oof``: for the out-of-fold fits (same here)."""
        from regmix_plugin.fit.registry import as_spec

        # A member is a registered name or a predictor instance (its settings are kept); member_params adds to either.
        specs = [as_spec(m, "stack.members") for m in self.members]
        if not specs:
            raise FitError("stack.members: empty; give at least one predictor name")
        for name, _ in specs:
            if name in ("stack", "auto"):
                raise FitError(f"stack.members: {name!r} cannot be a member; use base predictors")
        return [(n, {**p, **(self.member_params or {}).get(n, {})}) for n, p in specs]

    def _make(self, name: str, params: dict) -> Predictor:
        from regmix_plugin.fit.registry import get_predictor

        return get_predictor(name, **{"random_state": self.random_state, **params})

    # ---- selection on out-of-fold predictions (shared with `auto`, fit/oof.py) -------------------
    def oof_specs(self) -> list[tuple[str, dict]]:
        """(registry name, full hyperparameters) of the models whose out-of-fold predictions weigh the members."""
        return [(n, {"random_state": self.random_state, **p}) for n, p in self._specs(oof=True)]

    def oof_folds(self, n: int) -> list[np.ndarray]:
        return kfold_indices(n, min(int(self.n_splits), n), self.random_state)

    def select(self, P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """Member weights and intercept from out-of-fold predictions ``P`` (runs x members): NNLS on centred columns."""
        pm, ym = P.mean(axis=0), y.mean()
        w, _ = nnls(P - pm, y - ym)
        if not np.any(w > 0):
            w = np.full(P.shape[1], 1.0 / P.shape[1])  # no member explains anything: average them
        return w, float(ym - pm @ w)

    @staticmethod
    def combine(selected: tuple[np.ndarray, float], P: np.ndarray) -> np.ndarray:
        w, b = selected
        return b + P @ w

    def fit_from_oof(self, X: np.ndarray, y: np.ndarray, P: np.ndarray) -> "StackPredictor":
        """``fit(X, y)`` given the out-of-fold predictions of :meth:`oof_specs` on :meth:`oof_folds`: the
        same model, without computing them again (``auto`` already has them)."""
        self.n_features_in_ = np.asarray(X).shape[1]
        self.weights_, self.intercept_ = self.select(P, y)
        self.members_ = [self._make(*s).fit(X, y) for s in self._specs()]
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._specs()  # validates the members before any fit
        folds = self.oof_folds(len(y))
        P = np.column_stack([out_of_fold(lambda s=s: self._make(*s), X, y, folds) for s in self.oof_specs()])
        self.fit_from_oof(X, y, P)

    def is_smooth(self) -> bool:
        return all(m.smooth for m, w in zip(self.members_, self.weights_) if w > 0)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        out = np.full(X.shape[0], self.intercept_)
        for m, w in zip(self.members_, self.weights_):
            if w > 0:
                out += w * m.predict(X)
        return out

    def _get_state(self) -> State:
        return State(
            meta={"intercept": self.intercept_, "member_names": [m.name for m in self.members_]},
            arrays={"weights": self.weights_},
            children={f"member_{i}": m for i, m in enumerate(self.members_)},
        )

    def _set_state(self, state: State) -> None:
        self.intercept_ = float(state.meta["intercept"])
        self.weights_ = np.asarray(state.arrays["weights"], dtype=float)
        self.members_ = [state.children[f"member_{i}"] for i in range(len(self.weights_))]


@register
class LawBlendPredictor(StackPredictor):
    """The log-law at several floors ``eps`` at once, blended by non-negative least squares on K-fold
    out-of-fold predictions: the small-sample predictor.

    ``log-law`` picks one ``eps`` by K-fold rho; with 64 runs that choice is noisy (folds of 13 runs), and a
    wrong pick costs more than a blend of the neighbours does. The blend keeps every floor the training
    runs support, weighted by how much each adds out of fold, and is still a smooth law the exact
    optimiser can differentiate. Measured by CV on the training runs only (docs/predictors.md).
    """

    name = "law-blend"
    smooth = True
    flexibility = 1

    def __init__(
        self,
        eps_grid: tuple[float, ...] | list[float] = (0.01, 0.03, 0.1),
        n_splits: int = 5,
        n_starts: int = 4,
        huber_scale: float = 0.5,
        random_state: int = 0,
    ) -> None:
        self.eps_grid = eps_grid
        self.n_splits = n_splits
        self.n_starts = n_starts
        self.huber_scale = huber_scale
        self.random_state = random_state

    def _specs(self, oof: bool = False) -> list[tuple[str, dict]]:
        grid = [float(e) for e in self.eps_grid]
        if not grid or min(grid) <= 0:
            raise FitError(f"law-blend.eps_grid: {self.eps_grid!r} must list positive numbers")
        # Out-of-fold fits only weigh the members, so half the starts do (as the log-law's eps search does).
        starts = max(1, int(self.n_starts) // 2) if oof else int(self.n_starts)
        law = {"features": "log", "n_starts": starts, "huber_scale": self.huber_scale}
        return [("mixing-law", {**law, "eps": e}) for e in grid]

    def is_smooth(self) -> bool:
        return True

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d L / d r at one mixture: the blend weights times each member law's analytic gradient."""
        self._check_fitted()
        return sum(w * m.gradient(x) for m, w in zip(self.members_, self.weights_) if w > 0)
