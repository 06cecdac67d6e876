"""``auto``: pick the predictor with the best K-fold Spearman rho on the training runs, then refit it.

The choice and every candidate's scores are kept (``cv_`` and ``reason_``) so the CV table, the report and
regmix.json's provenance can say why this predictor was chosen.

Every model is fitted once per fold and shared between the candidates that use it
(:mod:`regmix_plugin.fit.oof`): the stack's members are the ``eff-law`` and ``lightgbm`` candidates, and
``log-law`` and ``law-blend`` select on the same three laws; what that saves is measured in DECISIONS 34 and
BENCHMARKS.md. A :class:`~regmix_plugin.fit.progress.FitListener` sees each fold fit begin and each
candidate's CV row as soon as it is final.

What ``auto`` sees is the fit's :class:`~regmix_plugin.fit.base.FitData`. When the target is a weighted sum of
several columns (``columns``), each of ``column_candidates`` is also scored in its per-column form (one law
per column, summed: :mod:`regmix_plugin.fit.percolumn`), on the same folds and against the same target, and
competes with the rest. When the target is one column and the runs have other metrics (``auxiliary``: e.g.
the per-domain losses beside a one-domain target), a candidate whose class declares ``"auxiliary"`` in its
``needs`` (``joint-law``) is fitted on the target plus those columns (:mod:`regmix_plugin.fit.jointlaw`); it
is scored only when it is among ``candidates`` (and, when ``auxiliary_candidates`` is given, named there).
Past ``max_column_laws`` columns the per-column forms fit one law per group of similar columns instead.
Candidates are registered names or predictor instances.
"""

from __future__ import annotations

import numpy as np

from regmix_plugin.fit.base import FitData, FitError, Predictor, State, is_smooth
from regmix_plugin.fit.cv import CVResult, kfold_indices, scores
from regmix_plugin.fit.oof import FoldCache, Spec, members, spec_key
from regmix_plugin.fit.progress import FitListener
from regmix_plugin.fit.registry import register

# joint-law is not among the defaults: eff-law ranks better on RegMix's train-only CV at every size measured,
# and its joint fits were most of auto's time (docs/predictors.md, "joint-law"; DECISIONS 34). Name it in
# `candidates` to have it scored, fitted with the auxiliary losses.
DEFAULT_CANDIDATES = ("linear", "lightgbm", "mixing-law", "log-law", "law-blend", "eff-law", "stack")
# Scored for comparison but never chosen while another candidate is eligible: a model linear in the weights
# has its minimum over the simplex at a vertex whatever the data say, so the mixture optimised with it is a
# one-domain mixture; it cannot represent diminishing returns (the worst predictor on RegMix's data at every
# size: docs/predictors.md). With few noisy runs its CV rank can still come out on top by chance.
DEFAULT_BASELINES = ("linear",)
# Smooth laws cheap enough to fit once per column inside K-fold CV; the log-law, which chooses its eps by an
# inner CV, costs several times more per column and scored lower (DECISIONS 21, docs/predictors.md "Targets").
DEFAULT_COLUMN_CANDIDATES = ("mixing-law", "eff-law")
# Past this many columns the per-column forms fit one law per group of similar columns (column_groups of
# them, fit/percolumn.py) instead of one per column: one law per column over a mean of 110 downstream tasks
# was slow and scored lower than one law on the mean, two groups higher (DECISIONS 37).
MAX_COLUMN_LAWS = 16


@register
class AutoPredictor(Predictor):
    name = "auto"
    needs = frozenset({"columns", "auxiliary"})
    selects_by_cv = True

    def __init__(
        self,
        candidates: tuple[str, ...] | list[str] = DEFAULT_CANDIDATES,
        candidate_params: dict | None = None,
        baselines: tuple[str, ...] | list[str] = DEFAULT_BASELINES,
        column_candidates: tuple[str, ...] | list[str] = DEFAULT_COLUMN_CANDIDATES,
        auxiliary_candidates: tuple[str, ...] | list[str] | None = None,
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
        self.auxiliary_candidates = auxiliary_candidates  # None: every candidate that declares it needs them
        self.max_column_laws = max_column_laws
        self.column_groups = column_groups
        self.n_splits = n_splits
        self.metric = metric
        self.prefer_smooth = prefer_smooth  # see _choose
        self.random_state = random_state

    def _spec(self, candidate) -> Spec:
        """(registry name, hyperparameters) of a candidate given by name or as a predictor instance."""
        from regmix_plugin.fit.registry import as_spec, predictor_class

        if candidate == "auto" or isinstance(candidate, AutoPredictor):
            raise FitError("auto.candidates: 'auto' cannot be its own candidate")
        name, params = as_spec(candidate, "auto.candidates")
        predictor_class(name, field="auto.candidates")
        params.update((self.candidate_params or {}).get(name, {}))
        params.setdefault("random_state", self.random_state)
        return name, params

    def _per_column_spec(self, candidate, weights: np.ndarray) -> Spec:
        """The per-column form of a candidate: one law per column, or per group of columns when the target has
        more than ``max_column_laws`` columns."""
        name, params = self._spec(candidate)  # validates the candidate
        base_params = (self.candidate_params or {}).get(name)
        if not isinstance(candidate, str):  # an instance: its own settings, then candidate_params over them
            base_params = {**{k: v for k, v in params.items() if k != "random_state"}, **(base_params or {})}
        groups = int(self.column_groups) if len(weights) > int(self.max_column_laws) else 0
        return "per-column", {"base": name, "column_weights": weights.tolist(), "groups": groups,
                              "base_params": base_params, "random_state": self.random_state}

    def fit_target(self, X, y, columns: np.ndarray | None = None, weights=None,
                   auxiliary: np.ndarray | None = None, listener: FitListener | None = None) -> "AutoPredictor":
        """``fit(FitData(X, y, columns, weights, auxiliary))``: the arrays spelled out."""
        return self.fit(FitData(X, y, columns, weights, auxiliary), listener=listener)

    @staticmethod
    def _extras(data: FitData) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
        """The target's columns and weights when there are two or more; the auxiliary metrics when the target
        is one column (joint-law competes where the evidence for it is: a composite target is already
        modelled per column, and on the demo's mean loss joint-law scored lower; docs/predictors.md)."""
        columns = None
        if data.columns is not None and np.ndim(data.columns) == 2 and np.shape(data.columns)[1] >= 2:
            columns = (np.asarray(data.columns, dtype=float), np.asarray(data.column_weights, dtype=float).reshape(-1))
        auxiliary = None
        if columns is None and data.auxiliary is not None and np.ndim(data.auxiliary) == 2 and np.shape(data.auxiliary)[1] >= 1:
            auxiliary = np.asarray(data.auxiliary, dtype=float)
        return columns, auxiliary

    def _takes_auxiliary(self, spec: Spec) -> bool:
        from regmix_plugin.fit.registry import predictor_class

        named = self.auxiliary_candidates is None or spec[0] in set(self.auxiliary_candidates)
        return named and "auxiliary" in predictor_class(spec[0]).needs

    def _plan(self, columns, auxiliary) -> list[tuple[str, Spec, str]]:
        """(label, model spec, what it is fitted on: "y", "aux", "columns" or "column groups") per candidate, in
        table order."""
        from regmix_plugin.fit.oof import make

        if not list(self.candidates):
            raise FitError("auto.candidates: empty; give at least one predictor name")
        plan = []
        for c in self.candidates:
            spec = self._spec(c)
            plan.append((spec[0], spec, "aux" if auxiliary is not None and self._takes_auxiliary(spec) else "y"))
        if columns is not None:
            w = columns[1]
            for c in self.column_candidates:
                spec = self._per_column_spec(c, w)
                # One law per column shares each column's fold fits across candidates ("columns"); groups are
                # found inside each fold's fit, so the grouped form is fitted on the column matrix at once.
                plan.append((make(spec).label, spec, "column groups" if spec[1]["groups"] else "columns"))
        return plan

    @staticmethod
    def _targets(data: FitData, columns, auxiliary, fit_on: str) -> list[tuple[np.ndarray | FitData, str, float]]:
        """(what a candidate is fitted on, cache key, weight); several for the per-column form."""
        if fit_on == "aux":
            return [(FitData(data.X, data.y, auxiliary=auxiliary), "y+auxiliary", 1.0)]
        if fit_on == "columns":
            Y, w = columns
            return [(Y[:, j], f"column {j}", float(w[j])) for j in range(Y.shape[1])]
        if fit_on == "column groups":
            return [(FitData(data.X, data.y, columns=columns[0], column_weights=columns[1]), "columns", 1.0)]
        return [(data.y, "y", 1.0)]

    def _fit_data(self, data: FitData, listener: FitListener | None = None) -> None:
        from regmix_plugin.errors import check_choice
        from regmix_plugin.fit.cv import METRICS
        from regmix_plugin.fit.oof import make

        check_choice("auto.metric", self.metric, METRICS)
        X, y = data.X, data.y
        columns, auxiliary = self._extras(data)
        listener = listener or FitListener()
        plan = self._plan(columns, auxiliary)
        n_splits = min(int(self.n_splits), len(y))
        folds = kfold_indices(len(y), n_splits, self.random_state)
        cache = FoldCache(X, folds, step=listener.step)
        listener.start(self._count_fits(plan, data, columns, auxiliary, n_splits))
        results, by_label, skipped = [], {}, []
        try:
            for label, spec, fit_on in plan:
                # Per column: each column's own law (spec's base), summed with the target's weights.
                base = self._column_base(spec) if fit_on == "columns" else spec
                try:
                    oof = sum(w * cache.predictions(base, t, key, label)
                              for t, key, w in self._targets(data, columns, auxiliary, fit_on))
                except FitError as e:
                    # A candidate that cannot fit this target (a law that needs a positive one, say) is left
                    # out, and the table says why; the others still compete (DECISIONS 68).
                    skipped.append({"predictor": label, "skipped": str(e)})
                    listener.row(skipped[-1])
                    continue
                result = CVResult(label, scores(y, oof), oof)
                results.append(result)
                by_label[label] = (spec, fit_on)
                listener.row(result.row())
        finally:
            listener.close()
        if not results:
            raise FitError("auto: no candidate could fit this target: " + "; ".join(r["skipped"] for r in skipped))
        best, self.selection_ = self._choose(results, folds, y, by_label)
        self.cv_ = [r.row() for r in results] + skipped
        self.oofs_ = {r.name: r.oof for r in results}  # not saved: fit_model's direction-aware top-10 overlap
        self.chosen_ = best.name
        self.reason_ = self._reason(best, results, n_splits, len(y))
        self.oof_ = best.oof
        self.fits_ = cache.fits
        spec, fit_on = by_label[best.name]
        self.fitted_on_ = fit_on
        if fit_on in ("columns", "column groups"):
            self.model_ = make(spec).fit(FitData(X, y, columns=columns[0], column_weights=columns[1]))
        elif fit_on == "aux":
            self.model_ = make(spec).fit(FitData(X, y, auxiliary=auxiliary))
        else:
            self.model_ = cache.refit(spec, y, "y")

    @staticmethod
    def _column_base(spec: Spec) -> Spec:
        """The single law a per-column spec fits to each column."""
        params = dict(spec[1].get("base_params") or {})
        params.setdefault("random_state", spec[1]["random_state"])
        return spec[1]["base"], params

    def uses_auxiliary(self) -> bool:
        return getattr(self, "fitted_on_", None) == "aux"

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

        if fit_on in ("columns", "column groups"):
            return bool(predictor_class(spec[1]["base"]).smooth)
        model = make(spec)
        subs = members(model)
        if subs:  # a composite over out-of-fold members is as smooth as all of them
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
        skipped = [r["predictor"] for r in self.cv_ if "skipped" in r] if hasattr(self, "cv_") else []
        if skipped:
            others += f"; skipped (cannot fit this target): {', '.join(skipped)}"
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

    def _count_fits(self, plan, data: FitData, columns, auxiliary, n_splits: int) -> int:
        """Fold fits the plan needs, each (model, fitted-on) once: what the progress bar counts to."""
        from regmix_plugin.fit.oof import make

        seen = set()
        for _, spec, fit_on in plan:
            spec = self._column_base(spec) if fit_on == "columns" else spec
            for t, key, _ in self._targets(data, columns, auxiliary, fit_on):
                subs = members(make(spec)) if isinstance(t, np.ndarray) and t.ndim == 1 else []
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
