"""``auto``: pick the predictor with the best K-fold Spearman rho on the training runs, then refit it.

The choice and every candidate's scores are kept (``cv_`` and ``reason_``) so the CV table, the report and
regmix.json's provenance can say why this predictor was chosen.

When the target is a weighted sum of several columns (``fit_target`` with ``columns``), each of
``column_candidates`` is also scored in its per-column form (one law per column, summed:
:mod:`regmix_plugin.fit.percolumn`), on the same folds and against the same
target, and competes with the rest. When the runs have other metrics (``auxiliary``: e.g. the per-domain
losses beside a one-domain target), each of ``auxiliary_candidates`` is scored fitted on the target plus
those columns (:mod:`regmix_plugin.fit.jointlaw`), again on the same folds.
"""

from __future__ import annotations

import numpy as np

from regmix_plugin.fit.base import FitError, Predictor, State, is_smooth
from regmix_plugin.fit.cv import CVResult, cross_validate, kfold_indices, out_of_fold, scores

DEFAULT_CANDIDATES = ("linear", "lightgbm", "mixing-law", "log-law", "law-blend", "eff-law", "stack")
# Scored for comparison but never chosen while another candidate is eligible: a model linear in the weights
# has its minimum over the simplex at a vertex whatever the data say, so the mixture optimised with it is a
# one-domain mixture; it cannot represent diminishing returns (measured: worst predictor on RegMix's data
# at every size, docs/predictors.md). With few noisy runs its CV rank can still come out on top by chance.
DEFAULT_BASELINES = ("linear",)
# Smooth laws cheap enough to fit once per column inside K-fold CV (7 columns x 5 folds x 48 demo runs: 4 s
# for mixing-law, 22 s for eff-law, which scored CV rho 96.1 against 86.9 on the demo's mean loss; the
# log-law, which chooses its eps by an inner CV, took 68 s for the same and scored lower).
DEFAULT_COLUMN_CANDIDATES = ("mixing-law", "eff-law")
# Fitted on the target and the runs' other losses: with 64 RegMix runs, train-only CV Pile-CC 97.73 vs
# law-blend's 97.13 and 13-domain mean 97.02 vs 96.78 (docs/predictors.md, "joint-law").
DEFAULT_AUXILIARY_CANDIDATES = ("joint-law",)


class AutoPredictor(Predictor):
    name = "auto"

    def __init__(
        self,
        candidates: tuple[str, ...] | list[str] = DEFAULT_CANDIDATES,
        candidate_params: dict | None = None,
        baselines: tuple[str, ...] | list[str] = DEFAULT_BASELINES,
        column_candidates: tuple[str, ...] | list[str] = DEFAULT_COLUMN_CANDIDATES,
        auxiliary_candidates: tuple[str, ...] | list[str] = DEFAULT_AUXILIARY_CANDIDATES,
        n_splits: int = 5,
        metric: str = "spearman",
        random_state: int = 0,
    ) -> None:
        self.candidates = candidates
        self.candidate_params = candidate_params
        self.baselines = baselines
        self.column_candidates = column_candidates
        self.auxiliary_candidates = auxiliary_candidates
        self.n_splits = n_splits
        self.metric = metric
        self.random_state = random_state

    def _make(self, name: str) -> Predictor:
        from regmix_plugin.fit.registry import get_predictor

        if name == "auto":
            raise FitError("auto.candidates: 'auto' cannot be its own candidate")
        params = dict((self.candidate_params or {}).get(name, {}))
        params.setdefault("random_state", self.random_state)
        return get_predictor(name, **params)

    def _make_per_column(self, name: str, weights: np.ndarray) -> Predictor:
        from regmix_plugin.fit.percolumn import PerColumnPredictor

        return PerColumnPredictor(name, weights.tolist(), (self.candidate_params or {}).get(name), self.random_state)

    def fit_target(self, X, y, columns: np.ndarray | None = None, weights=None,
                   auxiliary: np.ndarray | None = None) -> "AutoPredictor":
        """``fit(X, y)`` where ``y = columns @ weights``; with two or more columns the per-column forms compete
        too, and with ``auxiliary`` metrics of the same runs (runs x k, k >= 1) the auxiliary candidates."""
        self._columns = None
        if columns is not None and np.asarray(columns).ndim == 2 and np.asarray(columns).shape[1] >= 2:
            self._columns = (np.asarray(columns, dtype=float), np.asarray(weights, dtype=float).reshape(-1))
        self._auxiliary = None
        if auxiliary is not None and np.asarray(auxiliary).ndim == 2 and np.asarray(auxiliary).shape[1] >= 1:
            self._auxiliary = np.asarray(auxiliary, dtype=float)
        try:
            return self.fit(X, y)
        finally:
            del self._columns, self._auxiliary

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from regmix_plugin.errors import check_choice
        from regmix_plugin.fit.cv import METRICS

        check_choice("auto.metric", self.metric, METRICS)
        auxiliary = getattr(self, "_auxiliary", None)
        # With auxiliary metrics, an auxiliary candidate is scored on them (below), not on the target alone.
        names = [n for n in self.candidates if auxiliary is None or n not in set(self.auxiliary_candidates)]
        if not names:
            raise FitError("auto.candidates: empty; give at least one predictor name")
        n_splits = min(int(self.n_splits), len(y))
        results = cross_validate({n: (lambda n=n: self._make(n)) for n in names}, X, y, n_splits, self.random_state)
        columns = getattr(self, "_columns", None)
        # Each candidate's maker and what it is fitted on: y, or more than y for the candidates below.
        makers = {r.name: ((lambda n=r.name: self._make(n)), y) for r in results}
        # (label, maker, fitted on): per-column forms on the target's columns, auxiliary candidates on the
        # target plus the auxiliary metrics; scored against y on the folds cross_validate used.
        extra = []
        if columns is not None:
            Y, w = columns
            extra += [(self._make_per_column(n, w).label, (lambda n=n: self._make_per_column(n, w)), Y)
                      for n in self.column_candidates]
        if auxiliary is not None:
            Ya = np.column_stack([y, auxiliary])
            extra += [(n, (lambda n=n: self._make(n)), Ya) for n in self.auxiliary_candidates]
        folds = kfold_indices(len(y), n_splits, self.random_state)
        for label, make, fit_on in extra:
            oof = out_of_fold(make, X, fit_on, folds)
            results.append(CVResult(label, scores(y, oof), oof))
            makers[label] = (make, fit_on)
        sign = 1.0 if self.metric == "mse" else -1.0  # lower is better for MSE, higher for the rest
        eligible = [r for r in results if r.name not in set(self.baselines)] or results
        best = min(eligible, key=lambda r: sign * r.scores[self.metric])
        self.cv_ = [r.row() for r in results]
        self.chosen_ = best.name
        self.reason_ = (
            f"{best.name} has the best {n_splits}-fold CV {self.metric} on the {len(y)} training runs"
            f"{' among non-baseline predictors' if len(eligible) < len(results) else ''} "
            f"({best.scores[self.metric]:.2f}; "
            + ", ".join(f"{r.name}{' (baseline, not chosen)' if r not in eligible else ''} "
                        f"{r.scores[self.metric]:.2f}" for r in results if r is not best)
            + ")"
        )
        self.oof_ = best.oof
        make, fit_on = makers[best.name]
        self.model_ = make().fit(X, fit_on)

    def is_smooth(self) -> bool:
        return getattr(self, "model_", None) is not None and is_smooth(self.model_)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        grad = getattr(self.model_, "gradient", None)
        if grad is None:
            raise NotImplementedError("gradient: the chosen predictor has no analytic gradient")
        return grad(x)

    def minimize_on_simplex(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        solve = getattr(self.model_, "minimize_on_simplex", None)
        return solve(lo, hi) if solve is not None else None

    def _get_state(self) -> State:
        return State(
            meta={"cv": self.cv_, "chosen": self.chosen_, "reason": self.reason_},
            arrays={"oof": self.oof_},
            children={"chosen_model": self.model_},
        )

    def _set_state(self, state: State) -> None:
        self.cv_ = list(state.meta["cv"])
        self.chosen_ = str(state.meta["chosen"])
        self.reason_ = str(state.meta["reason"])
        self.oof_ = np.asarray(state.arrays["oof"], dtype=float)
        self.model_ = state.children["chosen_model"]
