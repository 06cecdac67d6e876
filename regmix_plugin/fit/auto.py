"""``auto``: pick the predictor with the best K-fold Spearman rho on the training runs, then refit it.

The choice and every candidate's scores are kept (``cv_`` and ``reason_``) so the CV table, the report and
regmix.json's provenance can say why this predictor was chosen.

Every model is fitted once per fold and shared between the candidates that use it
(:mod:`regmix_plugin.fit.oof`): the stack's members are the ``eff-law`` and ``lightgbm`` candidates, and
``log-law`` and ``law-blend`` select on the same three laws. On RegMix's 512 runs this, with one-thread
BLAS and LightGBM, took ``auto`` from 35 CPU-minutes to a few seconds (DECISIONS 34, BENCHMARKS.md). A :class:`~regmix_plugin.fit.progress.FitListener`
sees each fold fit begin and each candidate's CV row as soon as it is final.

When the target is a weighted sum of several columns (``fit_target`` with ``columns``), each of
``column_candidates`` is also scored in its per-column form (one law per column, summed:
:mod:`regmix_plugin.fit.percolumn`), on the same folds and against the same target, and competes with the
rest. When the runs have other metrics (``auxiliary``: e.g. the per-domain losses beside a one-domain
target), a candidate named in ``auxiliary_candidates`` (``joint-law``) is fitted on the target plus those
columns (:mod:`regmix_plugin.fit.jointlaw`); it is scored only when it is among ``candidates``. Past
``max_column_laws`` columns the per-column forms fit one law per group of similar columns instead.
"""

from __future__ import annotations

import numpy as np

from regmix_plugin.fit.base import FitError, Predictor, State, is_smooth
from regmix_plugin.fit.cv import CVResult, kfold_indices, scores
from regmix_plugin.fit.oof import FoldCache, Spec, members, spec_key
from regmix_plugin.fit.progress import FitListener

# joint-law is not among the defaults: eff-law ranks better on RegMix's train-only CV at every size measured
# (64 runs: Pile-CC 98.19 vs 97.73, 13-domain mean 98.33 vs 97.02; from 256 runs the stack is ahead of
# both), and its 13-column joint fits were two thirds of auto's time (DECISIONS 34). Name it in
# `candidates` to have it scored, fitted with the auxiliary losses.
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
# Fitted on the target and the runs' other losses when scored: with 64 RegMix runs, train-only CV Pile-CC
# 97.73 vs law-blend's 97.13 and 13-domain mean 97.02 vs 96.78 (docs/predictors.md, "joint-law").
DEFAULT_AUXILIARY_CANDIDATES = ("joint-law",)
# Past this many columns the per-column forms fit one law per group of similar columns (column_groups of
# them, fit/percolumn.py) instead of one per column: a mean over 110 downstream tasks cost 110 fits per
# candidate and fold (230 s for auto on 64 Olmix runs) and scored lower in auto's own CV than one law on
# the mean (eff-law 74.5 per column vs 85.7), while two groups scored 97.5 vs 96.3 on held-out runs.
MAX_COLUMN_LAWS = 16


class AutoPredictor(Predictor):
    name = "auto"

    def __init__(
        self,
        candidates: tuple[str, ...] | list[str] = DEFAULT_CANDIDATES,
        candidate_params: dict | None = None,
        baselines: tuple[str, ...] | list[str] = DEFAULT_BASELINES,
        column_candidates: tuple[str, ...] | list[str] = DEFAULT_COLUMN_CANDIDATES,
        auxiliary_candidates: tuple[str, ...] | list[str] = DEFAULT_AUXILIARY_CANDIDATES,
        max_column_laws: int = MAX_COLUMN_LAWS,
        column_groups: int = 2,
        n_splits: int = 5,
        metric: str = "spearman",
        prefer_smooth: bool = True,
        random_state: int = 0,
    ) -> None:
        self.candidates = candidates
        self.candidate_params = candidate_params
        self.baselines = baselines
        self.column_candidates = column_candidates
        self.auxiliary_candidates = auxiliary_candidates
        self.max_column_laws = max_column_laws
        self.column_groups = column_groups
        self.n_splits = n_splits
        self.metric = metric
        self.prefer_smooth = prefer_smooth  # see _choose
        self.random_state = random_state

    def _spec(self, name: str) -> Spec:
        from regmix_plugin.fit.registry import predictor_class

        if name == "auto":
            raise FitError("auto.candidates: 'auto' cannot be its own candidate")
        predictor_class(name, field="auto.candidates")
        params = dict((self.candidate_params or {}).get(name, {}))
        params.setdefault("random_state", self.random_state)
        return name, params

    def _per_column_spec(self, name: str, weights: np.ndarray) -> Spec:
        """The per-column form of candidate ``name``: one law per column, or per group of columns when the
        target has more than ``max_column_laws`` columns."""
        groups = int(self.column_groups) if len(weights) > int(self.max_column_laws) else 0
        return "per-column", {"base": name, "column_weights": weights.tolist(), "groups": groups,
                              "base_params": (self.candidate_params or {}).get(name),
                              "random_state": self.random_state}

    def fit_target(self, X, y, columns: np.ndarray | None = None, weights=None,
                   auxiliary: np.ndarray | None = None, listener: FitListener | None = None) -> "AutoPredictor":
        """``fit(X, y)`` where ``y = columns @ weights``; with two or more columns the per-column forms compete
        too, and with ``auxiliary`` metrics of the same runs (runs x k, k >= 1) the auxiliary candidates are
        fitted on them. ``listener`` sees the progress (nothing is shown without one)."""
        self._columns = None
        if columns is not None and np.asarray(columns).ndim == 2 and np.asarray(columns).shape[1] >= 2:
            self._columns = (np.asarray(columns, dtype=float), np.asarray(weights, dtype=float).reshape(-1))
        self._auxiliary = None
        if auxiliary is not None and np.asarray(auxiliary).ndim == 2 and np.asarray(auxiliary).shape[1] >= 1:
            self._auxiliary = np.asarray(auxiliary, dtype=float)
        self._listener = listener
        try:
            return self.fit(X, y)
        finally:
            del self._columns, self._auxiliary, self._listener

    def _plan(self, y: np.ndarray) -> list[tuple[str, Spec, str]]:
        """(label, model spec, what it is fitted on: "y", "aux", "columns" or "column groups") per candidate, in
        table order."""
        auxiliary = getattr(self, "_auxiliary", None)
        names = list(self.candidates)
        if not names:
            raise FitError("auto.candidates: empty; give at least one predictor name")
        with_aux = set(self.auxiliary_candidates) if auxiliary is not None else set()
        plan = [(n, self._spec(n), "aux" if n in with_aux else "y") for n in names]
        if getattr(self, "_columns", None) is not None:
            from regmix_plugin.fit.oof import make

            w = self._columns[1]
            for n in self.column_candidates:
                self._spec(n)  # validates the name
                spec = self._per_column_spec(n, w)
                # One law per column shares each column's fold fits across candidates ("columns"); groups are
                # found inside each fold's fit, so the grouped form is fitted on the column matrix at once.
                plan.append((make(spec).label, spec, "column groups" if spec[1]["groups"] else "columns"))
        return plan

    def _targets(self, y: np.ndarray, fit_on: str) -> list[tuple[np.ndarray, str, float]]:
        """(values, cache key, weight) of what a candidate is fitted on; several for the per-column form."""
        if fit_on == "aux":
            return [(np.column_stack([y, self._auxiliary]), "y+auxiliary", 1.0)]
        if fit_on == "columns":
            Y, w = self._columns
            return [(Y[:, j], f"column {j}", float(w[j])) for j in range(Y.shape[1])]
        if fit_on == "column groups":
            return [(self._columns[0], "columns", 1.0)]
        return [(y, "y", 1.0)]

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from regmix_plugin.errors import check_choice
        from regmix_plugin.fit.cv import METRICS
        from regmix_plugin.fit.oof import make

        check_choice("auto.metric", self.metric, METRICS)
        listener = getattr(self, "_listener", None) or FitListener()
        plan = self._plan(y)
        n_splits = min(int(self.n_splits), len(y))
        folds = kfold_indices(len(y), n_splits, self.random_state)
        cache = FoldCache(X, folds, step=listener.step)
        listener.start(self._count_fits(plan, y, n_splits))
        results, by_label = [], {}
        try:
            for label, spec, fit_on in plan:
                # Per column: each column's own law (spec's base), summed with the target's weights.
                base = self._spec(spec[1]["base"]) if fit_on == "columns" else spec
                oof = sum(w * cache.predictions(base, t, key, label) for t, key, w in self._targets(y, fit_on))
                result = CVResult(label, scores(y, oof), oof)
                results.append(result)
                by_label[label] = (spec, fit_on)
                listener.row(result.row())
        finally:
            listener.close()
        best, self.selection_ = self._choose(results, folds, y, by_label)
        self.cv_ = [r.row() for r in results]
        self.chosen_ = best.name
        self.reason_ = self._reason(best, results, n_splits, len(y))
        self.oof_ = best.oof
        self.fits_ = cache.fits
        spec, fit_on = by_label[best.name]
        if fit_on in ("columns", "column groups"):
            self.model_ = make(spec).fit(X, self._columns[0])
        elif fit_on == "aux":
            self.model_ = make(spec).fit(X, np.column_stack([y, self._auxiliary]))
        else:
            self.model_ = cache.refit(spec, y, "y")

    def _choose(self, results: list[CVResult], folds, y: np.ndarray, by_label: dict) -> tuple[CVResult, dict]:
        """The best eligible candidate by CV, unless a smooth law is within one standard error of it.

        Proxy-scale CV favours flexible models that also learn the proxy scale's own quirks; a smooth law
        carries only the broad shape (diminishing returns, a floor), which is what a larger model shares. So
        when the best candidate is not smooth (trees, or a stack with a tree) and the best smooth law trails
        it by no more than the standard error of their per-fold difference, the law is chosen: the data
        cannot tell them apart, and the law is the one expected to transfer (the one-standard-error rule of
        Breiman et al., with smoothness as the simplicity order; DECISIONS 35). ``prefer_smooth=False``
        takes the best CV score whatever it is."""
        sign = 1.0 if self.metric == "mse" else -1.0  # lower is better for MSE, higher for the rest
        eligible = [r for r in results if r.name not in set(self.baselines)] or results
        best = min(eligible, key=lambda r: sign * r.scores[self.metric])
        sel = {"rule": "best CV score", "best_by_cv": best.name,
               "baselines_excluded": len(eligible) < len(results)}
        smooth = [r for r in eligible if self._smooth_candidate(*by_label[r.name])]
        if not self.prefer_smooth or not smooth or best in smooth:
            return best, sel
        law = min(smooth, key=lambda r: sign * r.scores[self.metric])
        diff = np.array([-sign * (scores(y[f], best.oof[f])[self.metric] - scores(y[f], law.oof[f])[self.metric])
                         for f in folds if len(f) >= 3])
        gap = -sign * (best.scores[self.metric] - law.scores[self.metric])
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) >= 2 else 0.0
        sel.update({"rule": "prefer a smooth law within one standard error of the best", "smooth_law": law.name,
                    "gap": round(float(gap), 4), "standard_error": round(se, 4)})
        return (law if gap <= se else best), sel

    @staticmethod
    def _smooth_candidate(spec: Spec, fit_on: str) -> bool:
        """Whether a candidate is a smooth law before it is fitted: its class, or all its members' classes."""
        from regmix_plugin.fit.oof import make
        from regmix_plugin.fit.registry import predictor_class

        model = make(spec)
        if spec[0] == "per-column":
            return bool(predictor_class(spec[1]["base"]).smooth)
        subs = members(model)
        if subs and spec[0] == "stack":
            return all(predictor_class(n).smooth for n, _ in subs)
        return bool(type(model).smooth)

    def _reason(self, best: CVResult, results: list[CVResult], n_splits: int, n_runs: int) -> str:
        """One sentence: what was chosen, by which rule, and every other candidate's score."""
        sel, metric = self.selection_, self.metric
        excluded = set(self.baselines) if sel["baselines_excluded"] else set()
        scored = f"{n_splits}-fold CV {metric} on the {n_runs} training runs"
        scored += " among non-baseline predictors" if excluded else ""
        others = ", ".join(f"{r.name}{' (baseline, not chosen)' if r.name in excluded else ''} {r.scores[metric]:.2f}"
                           for r in results if r is not best)
        if best.name == sel["best_by_cv"]:
            head = f"{best.name} has the best {scored}"
            if "smooth_law" in sel:
                head += (f"; the best smooth law, {sel['smooth_law']}, trails it by {sel['gap']:.2f}, more than one "
                         f"standard error ({sel['standard_error']:.2f})")
        else:
            head = (f"{best.name}, a smooth law, is within one standard error of the best {scored} "
                    f"({sel['best_by_cv']}, ahead by {sel['gap']:.2f}, standard error {sel['standard_error']:.2f}), "
                    "and smooth laws are preferred when CV cannot tell them apart: their rankings hold better at "
                    "larger scale")
        return f"{head} ({best.scores[metric]:.2f}; {others})"

    def _count_fits(self, plan, y: np.ndarray, n_splits: int) -> int:
        """Fold fits the plan needs, each (model, fitted-on) once: what the progress bar counts to."""
        from regmix_plugin.fit.oof import make

        seen = set()
        for _, spec, fit_on in plan:
            spec = self._spec(spec[1]["base"]) if fit_on == "columns" else spec
            for t, key, _ in self._targets(y, fit_on):
                subs = members(make(spec)) if np.ndim(t) == 1 else []
                seen.update((spec_key(s), key) for s in (subs or [spec]))
        return len(seen) * n_splits

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
            meta={"cv": self.cv_, "chosen": self.chosen_, "reason": self.reason_, "selection": self.selection_},
            arrays={"oof": self.oof_},
            children={"chosen_model": self.model_},
        )

    def _set_state(self, state: State) -> None:
        self.cv_ = list(state.meta["cv"])
        self.chosen_ = str(state.meta["chosen"])
        self.reason_ = str(state.meta["reason"])
        self.selection_ = dict(state.meta.get("selection", {}))
        self.oof_ = np.asarray(state.arrays["oof"], dtype=float)
        self.model_ = state.children["chosen_model"]
