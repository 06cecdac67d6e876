"""One predictor per column of a composite target, combined with the target's weights.

A target such as ``mean(valid/*/loss)`` is a weighted sum of per-domain losses. Data Mixing Laws fits one
law per domain and sums them, rather than one law to the sum: each domain's loss depends on the mixture
in its own way (mostly through its own share and a few related domains), and a single law on the sum has
to average those shapes into one. On the demo's 48 proxies the 5-fold CV Spearman of the mean loss went
from 54.6 (one mixing law on the mean) to 72.3 (one per domain, summed); docs/predictors.md.

``fit(X, Y)`` takes one column of ``Y`` per target term; a 1-D ``y`` is one column of weight 1, so the
class also behaves as a plain predictor. ``auto`` cross-validates this form beside the others whenever
the target has two or more terms, and chooses it only when its out-of-fold score is better.

With many columns (a mean over 110 downstream tasks), one law per column is 110 noisy fits per fold.
``groups=G`` instead clusters the columns into G groups of columns that move together across the
training runs (Ward linkage on each column standardised over the runs; deterministic, and computed inside
``fit``, so on the training rows only) and fits one law per group, on the group's weighted mean. On
Olmix's DCLM swarm (110 tasks, development seeds 100-119, never the reported seeds 0-2) two groups of
eff-law scored Spearman 97.53 on the runs left out with 64 runs (one eff-law on the mean: 96.25).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regmix_plugin.fit.base import FitData, FitError, Predictor, State, check_X, is_smooth
from regmix_plugin.fit.registry import register


@register
class PerColumnPredictor(Predictor):
    name = "per-column"
    flexibility = 2  # several laws; auto ranks the form at least as flexible as its base law
    needs = frozenset({"columns"})

    def __init__(
        self,
        base: str = "mixing-law",
        column_weights: tuple[float, ...] | list[float] | None = None,
        base_params: dict | None = None,
        groups: int = 0,
        random_state: int = 0,
    ) -> None:
        self.base = base
        self.column_weights = column_weights
        self.base_params = base_params
        self.groups = groups  # 0: one law per column; G > 0: one per group of similar columns (see above)
        self.random_state = random_state

    @property
    def label(self) -> str:
        """How CV tables and reasons name this form: ``mixing-law (per column)``, ``eff-law (2 column groups)``."""
        base = self.base.name if isinstance(self.base, Predictor) else self.base
        return f"{base} ({self.groups} column groups)" if int(self.groups) > 0 else f"{base} (per column)"

    def _make(self) -> Predictor:
        """A new base predictor; ``base`` is a registered name or a predictor instance (its settings are kept)."""
        from regmix_plugin.fit.registry import as_spec, get_predictor

        name, params = as_spec(self.base, "per-column.base")
        if name in ("per-column", "auto"):
            raise FitError(f"per-column.base: {name!r} cannot be the base; use a single predictor such as mixing-law")
        params.update(self.base_params or {})
        params.setdefault("random_state", self.random_state)
        return get_predictor(name, **params)

    def _as_data(self, X: Any, Y: Any) -> FitData:
        """``fit(X, Y)``: one column of ``Y`` per target term, weighted by ``column_weights``; a 1-D ``y`` is one
        column of weight 1."""
        X = check_X(X, self.name)
        Y = np.asarray(Y, dtype=float)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        w = self._weights(None)
        self._check_columns(X, Y, w)
        return FitData(X, Y @ w, columns=Y, column_weights=w)

    def _weights(self, given: np.ndarray | None) -> np.ndarray:
        """``column_weights`` when set, else the target's own (FitData), else one column of weight 1."""
        if self.column_weights is not None:
            return np.asarray(self.column_weights, dtype=float).reshape(-1)
        return np.ones(1) if given is None else np.asarray(given, dtype=float).reshape(-1)

    def _check_columns(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> None:
        if Y.ndim != 2 or Y.shape[1] != len(w):
            raise FitError(f"per-column.fit: Y has {Y.shape[1] if Y.ndim == 2 else Y.shape} column(s) but "
                           f"column_weights has {len(w)}; give one column per target term")
        if Y.shape[0] != X.shape[0]:
            raise FitError(f"per-column.fit: X has {X.shape[0]} rows but Y has {Y.shape[0]}; give one row per run")

    def _fit_data(self, data: FitData, listener: Any = None) -> None:
        X = data.X
        Y = data.y.reshape(-1, 1) if data.columns is None else np.asarray(data.columns, dtype=float)
        w = self._weights(None if data.columns is None else data.column_weights)
        self._check_columns(X, Y, w)
        if not isinstance(self.groups, int) or self.groups < 0:
            raise FitError(f"per-column.groups: {self.groups!r} must be an integer >= 0 (0 = one law per column)")
        if 0 < self.groups < Y.shape[1]:
            self.assignment_ = column_groups(Y, self.groups)
            W = np.zeros((Y.shape[1], int(self.assignment_.max()) + 1))
            W[np.arange(Y.shape[1]), self.assignment_] = w
            wg = W.sum(axis=0)
            if np.any(wg <= 0):
                raise FitError("per-column.groups: a group of columns has total weight <= 0; give positive target "
                               "weights or groups=0")
            Y, w = Y @ (W / wg), wg  # each group's weighted mean, weighted by the group's total weight
        else:
            self.assignment_ = np.arange(Y.shape[1])
        self.members_ = [self._make().fit(X, Y[:, j]) for j in range(Y.shape[1])]  # each checks its column
        self.weights_ = w

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return sum(w * m.predict(X) for w, m in zip(self.weights_, self.members_))

    def is_smooth(self) -> bool:
        return all(is_smooth(m) for m in self.members_)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """Sum of the members' analytic gradients (the optimiser falls back to differences without them)."""
        self._check_fitted()
        grads = [getattr(m, "gradient", None) for m in self.members_]
        if any(g is None for g in grads):
            raise NotImplementedError("gradient: a member has no analytic gradient")
        return sum(w * g(x) for w, g in zip(self.weights_, grads))

    def _get_state(self) -> State:
        return State(arrays={"weights": self.weights_, "assignment": self.assignment_},
                     children={f"column_{j}": m for j, m in enumerate(self.members_)})

    def _set_state(self, state: State) -> None:
        self.weights_ = np.asarray(state.arrays["weights"], dtype=float)
        self.assignment_ = np.asarray(state.arrays.get("assignment", np.arange(len(self.weights_))), dtype=int)
        self.members_ = [state.children[f"column_{j}"] for j in range(len(self.weights_))]


def column_groups(Y: np.ndarray, groups: int) -> np.ndarray:
    """Group index (0-based) of each column of ``Y``: Ward clusters of the columns standardised over the runs."""
    from scipy.cluster.hierarchy import fcluster, linkage

    Z = (Y - Y.mean(axis=0)) / np.maximum(Y.std(axis=0), 1e-12)
    labels = fcluster(linkage(Z.T, method="ward"), groups, criterion="maxclust") - 1
    # Number the groups by their first column, so the same clustering always gets the same numbers.
    order = {g: i for i, g in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[g] for g in labels], dtype=int)
