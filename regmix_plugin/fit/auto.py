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

from regmix_plugin.fit.base import FitData, FitError, Predictor, State, flexibility, is_smooth
from regmix_plugin.fit.cv import CVResult, corrected_se, divergence, fold_scores, repeated_folds, scores
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
# K-fold partitions scored by default. More are an option (``repeats``), not the default: on the development
# seeds they made the choice worse at 32 DCLM runs (93.3 with one partition, 89.2 with 2, 85.4 with 3: the
# mean over partitions leaned to the one-law eff-law, which failed on one split) and changed nothing on
# RegMix's 32-run subsets, at 2-3x the time (DECISIONS 78).
DEFAULT_REPEATS = 1
# From this many training runs on, a large swarm, the multi-start laws are fitted from their first (deterministic)
# start only and the learning curve scores one random subset per point instead of two (DECISIONS 80): at
# 2,000 runs x 128 domains eff-law's three starts ended at the same cost (spread 6e-6 relative) and its fits
# were 87 % of `regmix fit`'s 380 s; the learning curve's second subset adds nothing at a CV standard error
# of 0.03. Below it, every candidate is fitted as it always was (the benches' 32-512 runs are unchanged).
LARGE_SWARM = 1000
# The settings a large swarm thins, per predictor: the fewest starts (a user's candidate_params win).
LARGE_SWARM_PARAMS = {"eff-law": {"n_starts": 1, "ftol": 1e-4}, "mixing-law": {"n_starts": 4}, "log-law": {"n_starts": 2},
                      "law-blend": {"n_starts": 2}}
# What a fold fit may raise when a candidate cannot model the target (a law on a non-positive target, a
# singular system): the candidate is skipped with the reason in the CV table and the others go on.
FIT_FAILURES = (FitError, ArithmeticError, ValueError, np.linalg.LinAlgError)


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
        repeats: int = DEFAULT_REPEATS,
        random_state: int = 0,
        large_swarm: int | None = LARGE_SWARM,
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
        self.prefer_smooth = prefer_smooth  # the one-standard-error rule of _choose; False: the best CV score
        self.repeats = repeats  # K-fold partitions scored (seeds random_state, random_state + 1, ...)
        self.random_state = random_state
        self.large_swarm = large_swarm  # runs from which LARGE_SWARM_PARAMS apply; None: never

    def is_large(self, n_runs: int) -> bool:
        """A swarm of ``n_runs`` training runs gets the large-swarm budget (LARGE_SWARM_PARAMS; one learning
        curve subset per point)."""
        v = self.large_swarm
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise FitError(f"auto.large_swarm: {v!r} must be an integer >= 1 (training runs), or null for never")
        return v is not None and n_runs >= v

    def _thinned(self, name: str, params: dict, user: dict) -> dict:
        """``params`` with the large-swarm settings of ``name`` (and of a stack's members) where the user set none."""
        if not getattr(self, "_large", False):
            return params
        if name == "stack":
            from regmix_plugin.fit.registry import as_spec
            from regmix_plugin.fit.stack import DEFAULT_MEMBERS

            mp = {k: dict(v) for k, v in (params.get("member_params") or {}).items()}
            # The stack's members take the same settings as the candidates of those names: they share fold fits.
            for m in {as_spec(m, "stack.members")[0] for m in params.get("members", DEFAULT_MEMBERS)}:
                if m in LARGE_SWARM_PARAMS:
                    mp[m] = {**LARGE_SWARM_PARAMS[m], **mp.get(m, {}), **(user.get(m) or {})}
            return {**params, "member_params": mp}
        return {**LARGE_SWARM_PARAMS.get(name, {}), **params}

    def thinning(self) -> str:
        """What the large-swarm budget changed, for the reason line; empty below it."""
        if not getattr(self, "_large", False):
            return ""
        what = ", ".join(f"{n} {k}={v}" for n, p in LARGE_SWARM_PARAMS.items() for k, v in p.items())
        return (f"large swarm (>= {int(self.large_swarm)} runs): {what}, one learning-curve subset per point "
                "(DECISIONS 80)")

    def _spec(self, candidate) -> Spec:
        """(registry name, hyperparameters) of a candidate given by name or as a predictor instance."""
        from regmix_plugin.fit.registry import as_spec, predictor_class

        if candidate == "auto" or isinstance(candidate, AutoPredictor):
            raise FitError("auto.candidates: 'auto' cannot be its own candidate")
        name, params = as_spec(candidate, "auto.candidates")
        predictor_class(name, field="auto.candidates")
        explicit = dict(params) if not isinstance(candidate, str) else {}
        params.update((self.candidate_params or {}).get(name, {}))
        params.setdefault("random_state", self.random_state)
        return name, self._thinned(name, params, self.candidate_params or {}) if not explicit else params

    def _per_column_spec(self, candidate, weights: np.ndarray) -> Spec:
        """The per-column form of a candidate: one law per column, or per group of columns when the target has
        more than ``max_column_laws`` columns."""
        name, params = self._spec(candidate)  # validates the candidate
        base_params = (self.candidate_params or {}).get(name)
        if not isinstance(candidate, str):  # an instance: its own settings, then candidate_params over them
            base_params = {**{k: v for k, v in params.items() if k != "random_state"}, **(base_params or {})}
        groups = int(self.column_groups) if len(weights) > int(self.max_column_laws) else 0
        if isinstance(candidate, str):
            base_params = {**LARGE_SWARM_PARAMS.get(name, {}), **(base_params or {})} if getattr(
                self, "_large", False) else base_params
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

    def n_repeats(self, n_runs: int) -> int:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise FitError(f"auto.repeats: {self.repeats!r} must be an integer >= 1")
        return int(self.repeats)

    def _fit_data(self, data: FitData, listener: FitListener | None = None) -> None:
        from regmix_plugin.errors import check_choice
        from regmix_plugin.fit.cv import METRICS
        from regmix_plugin.fit.oof import make

        check_choice("auto.metric", self.metric, METRICS)
        X, y = data.X, data.y
        columns, auxiliary = self._extras(data)
        listener = listener or FitListener()
        self._large = self.is_large(len(y))
        plan = self._plan(columns, auxiliary)
        n_splits = min(int(self.n_splits), len(y))
        repeats = self.n_repeats(len(y))
        partitions = repeated_folds(len(y), n_splits, self.random_state, repeats)
        # One cache per partition; the first is the single K-fold CV's (the chosen composite refits from it).
        caches = [FoldCache(X, folds, step=_step_of(listener, r, repeats)) for r, folds in enumerate(partitions)]
        listener.start(self._count_fits(plan, data, columns, auxiliary, n_splits) * repeats)
        results, by_label = [], {}
        try:
            for label, spec, fit_on in plan:
                result = self._score(label, spec, fit_on, data, columns, auxiliary, caches, partitions)
                results.append(result)
                by_label[label] = (spec, fit_on)
                listener.row(result.row())
        finally:
            listener.close()
        self.cv_ = [r.row() for r in results]
        self.oofs_ = {r.name: r.oof for r in results if r.ok}  # not saved: fit_model's direction-aware top-10 overlap
        self._results_ = results  # not saved: the per-fold records, for bench/selection_dev.py
        self._by_label_ = by_label  # not saved: what subset_score refits
        self.repeats_, self.n_splits_ = repeats, n_splits
        order = self._ranking(results, by_label, n_splits)
        self.fits_ = sum(c.fits for c in caches)
        # Refit the chosen candidate on every run; a refit that diverges on the training runs themselves is
        # flagged like a divergent fold and the rule chooses again without it.
        while True:
            best, self.selection_ = self._choose(order, results, by_label, n_splits)
            spec, fit_on = by_label[best.name]
            if fit_on in ("columns", "column groups"):
                model = make(spec).fit(FitData(X, y, columns=columns[0], column_weights=columns[1]))
            elif fit_on == "aux":
                model = make(spec).fit(FitData(X, y, auxiliary=auxiliary))
            else:
                model = caches[0].refit(spec, y, "y")
            bad = divergence(y, model.predict(X), [np.arange(len(y))])
            if not bad:
                break
            best.note = f"diverged when refitted on every run ({bad.split(': ', 1)[1]})"
            self.cv_ = [r.row() for r in results]
        self.model_ = model
        self.chosen_ = best.name
        self.fitted_on_ = fit_on
        self.reason_ = self._reason(best, results, n_splits, len(y))
        if self._large:
            self.selection_["large_swarm"] = self.thinning()
            self.reason_ += f"; {self.thinning()}"
        self.oof_ = best.oof

    def _score(self, label: str, spec: Spec, fit_on: str, data: FitData, columns, auxiliary,
               caches: list[FoldCache], partitions: list[list[np.ndarray]]) -> CVResult:
        """One candidate's CV over every partition; skipped (a fit failed) or flagged (a fold diverged) with a
        note instead of scores: a divergent fold's MSE of 1e30 is not averaged into anything."""
        y = data.y
        # Per column: each column's own law (spec's base), summed with the target's weights.
        base = self._column_base(spec) if fit_on == "columns" else spec
        none = dict.fromkeys(("spearman", "pearson", "mse", "top10_overlap"))
        try:
            oofs = [sum(w * cache.predictions(base, t, key, label)
                        for t, key, w in self._targets(data, columns, auxiliary, fit_on)) for cache in caches]
        except FIT_FAILURES as e:
            return CVResult(label, none, None, note=f"skipped: {' '.join(str(e).split())}")
        for r, (oof, folds) in enumerate(zip(oofs, partitions)):
            bad = divergence(y, oof, folds)
            if bad:
                where = f"partition {r + 1}, " if len(partitions) > 1 else ""
                return CVResult(label, none, oof, note=f"diverged ({where}{bad}); not chosen")
        per = [scores(y, oof) for oof in oofs]
        mean = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        fs = np.array([fold_scores(y, oof, folds, self.metric) for oof, folds in zip(oofs, partitions)])
        return CVResult(label, mean, oofs[0], fold_scores=fs, se=corrected_se(fs, len(partitions[0])),
                        per_partition=[p[self.metric] for p in per])

    def subset_score(self, data: FitData, rows: np.ndarray, seed: int) -> float | None:
        """The chosen candidate's K-fold CV score (this fit's K and metric) on ``rows`` of the fit's data, one
        partition with seed ``seed``; None where it cannot be scored there (the learning curve's points)."""
        from regmix_plugin.fit.cv import kfold_indices

        spec, fit_on = self._by_label_[self.chosen_]
        sub = data.take(rows)
        columns, auxiliary = self._extras(sub)
        folds = kfold_indices(len(rows), self.n_splits_, seed)
        result = self._score(self.chosen_, spec, fit_on, sub, columns, auxiliary, [FoldCache(sub.X, folds)], [folds])
        return result.scores[self.metric] if result.ok else None

    @staticmethod
    def _column_base(spec: Spec) -> Spec:
        """The single law a per-column spec fits to each column."""
        params = dict(spec[1].get("base_params") or {})
        params.setdefault("random_state", spec[1]["random_state"])
        return spec[1]["base"], params

    def uses_auxiliary(self) -> bool:
        return getattr(self, "fitted_on_", None) == "aux"

    def _flexibility(self, spec: Spec, fit_on: str) -> int:
        """A candidate's place in the constraint order before it is fitted (``Predictor.flexibility``): its
        class's; a per-column or grouped form of eff-law stays 0 (still decreasing in every domain), of any
        other law at least 2 (several laws); a composite over out-of-fold members (the stack) is its most
        flexible member's, and at least 2."""
        from regmix_plugin.fit.oof import make
        from regmix_plugin.fit.registry import predictor_class

        if fit_on in ("columns", "column groups"):
            # A sum of eff-laws is still decreasing in every domain's share: the shape constraint is what
            # ranks first (on the development seeds the grouped eff-law held up where one eff-law failed).
            base = flexibility(predictor_class(spec[1]["base"]))
            return 0 if base == 0 else max(2, base)
        model = make(spec)
        subs = members(model)
        if subs and type(model).flexibility is None:  # the stack; law-blend and the log-law are one law
            return max([2] + [flexibility(predictor_class(n)) for n, _ in subs])
        return flexibility(type(model))

    def _ranking(self, results: list[CVResult], by_label: dict, n_splits: int) -> list[CVResult]:
        """The scored candidates, best CV score first (baselines after the others)."""
        sign = 1.0 if self.metric == "mse" else -1.0  # lower is better for MSE, higher for the rest
        ok = [r for r in results if r.ok]
        if not ok:
            raise FitError("auto: no candidate could be scored on this target: "
                           + "; ".join(f"{r.name} {r.note}" for r in results))
        base = set(self.baselines)
        return sorted(ok, key=lambda r: (r.name in base, sign * r.scores[self.metric]))

    def _choose(self, order: list[CVResult], results: list[CVResult], by_label: dict,
                n_splits: int) -> tuple[CVResult, dict]:
        """The most constrained candidate whose CV score is within one standard error of the best's.

        With few runs per domain, CV's ranking of close candidates is noise: at 32 DCLM runs one split's CV
        put log-law ahead of eff-law by 7.6 (80.0 vs 72.4), and log-law then ranked the unseen runs at 53,
        eff-law at 92. So each candidate is compared with the CV leader on the same folds of every
        partition (``repeats`` of them): when the leader's margin is no more than the standard error of their
        per-fold difference (Nadeau & Bengio's, fit/cv.py), CV cannot tell them apart, and the more
        constrained one is taken (the one-standard-error rule of Breiman et al., with ``flexibility`` as the
        order: eff-law in any form, one law, several laws, GP, trees; ties by CV score). A constrained law also carries only the broad
        shape of the response, which is what a larger model shares (DECISIONS 35, 78). Baselines are chosen
        only when nothing else was scored; ``prefer_smooth=False`` takes the best CV score."""
        sign = 1.0 if self.metric == "mse" else -1.0
        m = self.metric
        live = [r for r in order if r.ok]
        if not live:
            raise FitError("auto: every scored candidate diverged when refitted on every run: "
                           + "; ".join(f"{r.name} {r.note}" for r in results))
        eligible = [r for r in live if r.name not in set(self.baselines)] or live
        best = eligible[0]
        sel = {"rule": "best CV score", "best_by_cv": best.name,
               "baselines_excluded": len(eligible) < len(live), "repeats": int(self.repeats_),
               "folds": int(n_splits), "best_score": round(best.scores[m], 4),
               "best_se": None if best.se is None else round(best.se, 4)}
        if not self.prefer_smooth:
            return best, sel
        within = []
        for r in eligible:
            gap = -sign * (best.scores[m] - r.scores[m])  # how far r trails the leader, >= 0
            se = 0.0 if r is best else corrected_se(-sign * (best.fold_scores - r.fold_scores), n_splits)
            if gap <= se:
                within.append((self._flexibility(*by_label[r.name]), sign * r.scores[m], r, gap, se))
        flex, _, chosen, gap, se = min(within, key=lambda t: (t[0], t[1]))
        sel.update({"rule": "the most constrained candidate within one standard error of the best CV score",
                    "flexibility": {r.name: self._flexibility(*by_label[r.name]) for r in eligible}})
        if chosen is not best:
            sel.update({"constrained": chosen.name, "gap": round(float(gap), 4), "standard_error": round(float(se), 4),
                        "constrained_score": round(chosen.scores[m], 4),
                        "constrained_se": None if chosen.se is None else round(chosen.se, 4)})
        return chosen, sel

    def _reason(self, best: CVResult, results: list[CVResult], n_splits: int, n_runs: int) -> str:
        """One sentence: what was chosen, by which rule, with the noise of the choice, and every other
        candidate's score."""
        sel, metric = self.selection_, self.metric
        excluded = set(self.baselines) if sel["baselines_excluded"] else set()
        folds = f"{sel['repeats']} x {n_splits}-fold" if sel["repeats"] > 1 else f"{n_splits}-fold"
        scored = f"{folds} CV {metric} on the {n_runs} training runs"
        scored += " among non-baseline predictors" if excluded else ""

        def pm(r: CVResult) -> str:
            return f"{r.scores[metric]:.1f} ± {r.se:.1f}" if r.se is not None else f"{r.scores[metric]:.2f}"

        others = ", ".join(f"{r.name}{' (baseline, not chosen)' if r.name in excluded else ''} "
                           + (pm(r) if r.ok else r.note) for r in results if r is not best)
        leader = next(r for r in results if r.name == sel["best_by_cv"])
        if best is leader:
            head = f"{best.name} has the best {scored}"
            within = [r for r in results if r.ok and r is not best and r.fold_scores is not None]
            if "flexibility" in sel and within:
                head += " and no more constrained candidate is within one standard error of it"
        else:
            head = (f"{best.name} vs {leader.name}: {pm(best)} vs {pm(leader)} {scored}; the gap "
                    f"({sel['gap']:.1f}) is within one standard error of the paired per-fold difference "
                    f"({sel['standard_error']:.1f}), so the more constrained {best.name} is chosen "
                    "(order: eff-law in any form, one law, several laws, GP, trees)")
        return f"{head} ({best.name} {pm(best)}; {others})"

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


def _step_of(listener: FitListener, r: int, repeats: int):
    """The progress callback of partition ``r``: its fits are named with the partition past the first."""
    if r == 0:
        return listener.step
    return lambda label, fold, k: listener.step(f"{label} (partition {r + 1}/{repeats})", fold, k)
