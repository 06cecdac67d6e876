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

DEFAULT_MEMBERS = ("log-law", "lightgbm")


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

    def _make(self, name: str) -> Predictor:
        from regmix_plugin.fit.registry import get_predictor

        if name in ("stack", "auto"):
            raise FitError(f"stack.members: {name!r} cannot be a member; use base predictors")
        params = dict((self.member_params or {}).get(name, {}))
        params.setdefault("random_state", self.random_state)
        return get_predictor(name, **params)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        names = list(self.members)
        if not names:
            raise FitError("stack.members: empty; give at least one predictor name")
        folds = kfold_indices(len(y), min(int(self.n_splits), len(y)), self.random_state)
        P = np.column_stack([out_of_fold(lambda n=n: self._make(n), X, y, folds) for n in names])
        pm, ym = P.mean(axis=0), y.mean()
        w, _ = nnls(P - pm, y - ym)
        if not np.any(w > 0):
            w = np.full(len(names), 1.0 / len(names))  # no member explains anything: average them
        self.weights_ = w
        self.intercept_ = float(ym - pm @ w)
        self.members_ = [self._make(n).fit(X, y) for n in names]

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
