"""`auto` scores the linear baseline but does not choose it while a law or tree model is available."""

from __future__ import annotations

import numpy as np
from fit_helpers import synthetic_xy

from regmix_plugin.fit.auto import AutoPredictor
from regmix_plugin.fit.cv import scores


def test_linear_is_scored_but_not_chosen_even_when_it_ranks_best():
    # A target exactly linear in the weights: linear ranks best in CV, yet its optimum is a vertex.
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.full(4, 0.7), 40)
    y = 3.0 + X @ np.array([0.5, -0.3, 0.2, 0.1]) + 0.001 * rng.normal(size=40)
    auto = AutoPredictor(candidates=("linear", "mixing-law"), n_splits=4, repeats=2).fit(X, y)
    scores = {row["predictor"]: row["spearman"] for row in auto.cv_}
    assert scores["linear"] >= scores["mixing-law"]
    assert auto.chosen_ == "mixing-law"
    assert "linear (baseline, not chosen)" in auto.reason_


def test_linear_is_chosen_when_it_is_the_only_candidate():
    X, y = synthetic_xy(30)
    auto = AutoPredictor(candidates=("linear",), n_splits=3, repeats=1).fit(X, y)
    assert auto.chosen_ == "linear"


def test_shared_models_are_fitted_once_per_fold_and_composites_match_their_own_fit():
    """The stack's members are the eff-law and LightGBM candidates; log-law and law-blend share their laws:
    each model is fitted once per fold (fit/oof.py), and the chosen composite is the same model `fit` gives."""
    import io

    from regmix_plugin.fit.cv import kfold_indices
    from regmix_plugin.fit.oof import FoldCache
    from regmix_plugin.fit.progress import ConsoleListener
    from regmix_plugin.fit.registry import get_predictor

    X, y = synthetic_xy(45, noise=0.01)
    params = {"lightgbm": {"n_estimators": 30, "learning_rate": 0.1}, "eff-law": {"n_starts": 1},
              "stack": {"members": ["eff-law", "lightgbm"], "n_splits": 3,
                        "member_params": {"lightgbm": {"n_estimators": 30, "learning_rate": 0.1},
                                          "eff-law": {"n_starts": 1}}},
              "log-law": {"n_starts": 4, "eps_grid": [0.01, 0.1], "cv_folds": 3},
              "law-blend": {"n_starts": 4, "eps_grid": [0.01, 0.1], "n_splits": 3}}
    out, err = io.StringIO(), io.StringIO()
    auto = AutoPredictor(candidates=("eff-law", "lightgbm", "stack", "log-law", "law-blend"), candidate_params=params,
                         n_splits=3, prefer_smooth=False, repeats=1)
    auto.fit_target(X, y, listener=ConsoleListener(out=out, err=err, bar=True))
    # eff-law, LightGBM, and the two laws (eps 0.01 / 0.1, two starts) the log-law and law-blend both select on.
    assert auto.fits_ == 4 * 3
    # The composites' CV rows repeat their selection on each fold's training rows.
    cache = FoldCache(X, auto_folds := kfold_indices(45, 3, 0))
    stack_oof = cache.predictions(("stack", {"random_state": 0, **params["stack"]}), y, "y")
    row = {r["predictor"]: r for r in auto.cv_}["stack"]
    assert row["spearman"] == round(scores(y, stack_oof)["spearman"], 4)
    # Refit from the shared out-of-fold predictions == the composite's own fit (same folds, same members).
    if auto.chosen_ in ("stack", "law-blend", "log-law"):
        own = get_predictor(auto.chosen_, random_state=0, **params[auto.chosen_]).fit(X, y)
        np.testing.assert_allclose(auto.predict(X), own.predict(X), rtol=1e-10)
    for name in ("stack", "log-law"):
        model = get_predictor(name, random_state=0, **params[name])
        assert len(model.oof_specs()) == 2 and len(auto_folds) == 3
        shared = cache.refit((name, {"random_state": 0, **params[name]}), y, "y")
        np.testing.assert_allclose(shared.predict(X), model.fit(X, y).predict(X), rtol=1e-10)
    # The progress bar names the candidate and the fold; the CV table came row by row, in candidate order.
    assert "eff-law: fold 1/3" in err.getvalue() and "law-blend: fold 3/3" not in err.getvalue()  # shared: none left
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| predictor |") and [ln.split(" | ")[0][2:] for ln in lines[1:]] == [
        "eff-law", "lightgbm", "stack", "log-law", "law-blend"]


def _results(y, preds: dict, partitions):
    """CVResults as auto builds them, from fixed out-of-fold predictions per partition."""
    from regmix_plugin.fit.cv import CVResult, corrected_se, fold_scores

    out = []
    for name, oofs in preds.items():
        fs = np.array([fold_scores(y, o, f, "spearman") for o, f in zip(oofs, partitions)])
        mean = {k: float(np.mean([scores(y, o)[k] for o in oofs])) for k in scores(y, oofs[0])}
        out.append(CVResult(name, mean, oofs[0], fold_scores=fs, se=corrected_se(fs, len(partitions[0]))))
    return out


def test_the_most_constrained_candidate_within_one_standard_error_is_chosen():
    """The rule on fixed out-of-fold predictions over 3 x 5 folds: eff-law (flexibility 0) trailing log-law
    (1) and LightGBM (4) by less than the standard error of the paired per-fold difference is chosen; one
    that trails by far more is not; prefer_smooth=False takes the CV leader."""
    from regmix_plugin.fit.cv import repeated_folds

    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    parts = repeated_folds(40, 5, 0, 3)
    noisy = [y + 0.6 * rng.normal(size=40) for _ in parts]
    by_label = {"lightgbm": (("lightgbm", {}), "y"), "log-law": (("log-law", {}), "y"), "eff-law": (("eff-law", {}), "y")}
    auto = AutoPredictor(baselines=())
    auto.repeats_ = 3
    for law, expect in (([o + 0.1 * rng.normal(size=40) for o in noisy], "eff-law"),  # within noise
                        ([y + 3.0 * rng.normal(size=40) for _ in parts], "log-law")):  # clearly worse
        res = _results(y, {"lightgbm": [o + 0.05 * rng.normal(size=40) for o in noisy], "log-law": noisy,
                           "eff-law": law}, parts)
        res[1].scores["spearman"] = max(r.scores["spearman"] for r in res) + 0.01  # log-law leads, by a hair
        order = auto._ranking(res, by_label, 5)
        best, sel = auto._choose(order, res, by_label, 5)
        assert sel["best_by_cv"] == "log-law" and best.name == expect, (sel, [r.row() for r in res])
        assert sel["flexibility"] == {"eff-law": 0, "log-law": 1, "lightgbm": 4}
        if expect == "eff-law":
            assert sel["constrained"] == "eff-law" and sel["gap"] <= sel["standard_error"]
    auto.prefer_smooth = False
    assert auto._choose(order, res, by_label, 5)[0].name == "log-law"


def test_a_divergent_fold_is_flagged_and_a_law_that_cannot_fit_is_skipped(tmp_path):
    """A candidate whose fold fit diverges (here: predicts 1e15 on one fold) is flagged in the table with no
    scores and never chosen; the mixing law on a target with negative values cannot be fitted at all and is
    skipped with its reason; auto goes on with the rest."""
    from regmix_plugin.fit.base import Predictor, State
    from regmix_plugin.fit.registry import register

    @register
    class BlowsUp(Predictor):  # a real (if silly) predictor: exact mean, except far off for one weight pattern
        name = "test-blows-up"
        smooth = True
        flexibility = 0

        def __init__(self, random_state: int = 0) -> None:
            self.random_state = random_state

        def _fit(self, X, y):
            self.m_ = float(np.mean(y))

        def _predict(self, X):
            return np.where(X[:, 0] > 0.8, 1e15, self.m_)

        def _get_state(self):
            return State(meta={"m": self.m_})

        def _set_state(self, state):
            self.m_ = state.meta["m"]

    from regmix_plugin.fit import registry

    X, y = synthetic_xy(40)
    X[3] = [0.9, 0.05, 0.03, 0.02]
    try:
        auto = AutoPredictor(candidates=("test-blows-up", "mixing-law", "lightgbm"), n_splits=4, repeats=2,
                             candidate_params={"mixing-law": {"n_starts": 1}, "lightgbm": {"n_estimators": 20}}).fit(X, y)
    finally:  # the registry is global: the conformance tests must not meet this predictor
        registry._REGISTRY.pop("test-blows-up")
    rows = {r["predictor"]: r for r in auto.cv_}
    assert rows["test-blows-up"]["spearman"] is None and rows["test-blows-up"]["mse"] is None
    assert rows["test-blows-up"]["note"].startswith("diverged (partition 1, fold ") and "MSE 1e+29" in rows["test-blows-up"]["note"]
    assert auto.chosen_ != "test-blows-up" and rows["mixing-law"]["note"] == ""
    from regmix_plugin.fit.cv import format_table

    assert "| test-blows-up | - | - | - | - | - | diverged" in format_table(auto.cv_)
    from types import SimpleNamespace

    from regmix_plugin.optimize.report import write_fit_report

    import pandas as pd

    from regmix_plugin.fit.targets import parse_target

    target = parse_target("y", pd.DataFrame({"y": y}), "minimize")
    model = SimpleNamespace(target=target, n_runs=40, chosen=auto.chosen_, reason=auto.reason_,
                            selection=auto.selection_, dropped=[], cv=auto.cv_, heldout={}, learning_curve={}, oof={},
                            interactions={}, heldout_text=lambda: "")
    md = write_fit_report(model, None, tmp_path)[0].read_text()
    assert "| test-blows-up | - | - | - | - | - | diverged (partition 1, fold" in md and "None" not in md
    auto = AutoPredictor(candidates=("mixing-law", "lightgbm"), n_splits=4, repeats=1,
                         candidate_params={"lightgbm": {"n_estimators": 20}}).fit(X, y - 3.0)
    rows = {r["predictor"]: r for r in auto.cv_}
    assert rows["mixing-law"]["note"].startswith("skipped: mixing-law: the target has values <= 0")
    assert auto.chosen_ == "lightgbm" and "mixing-law skipped" in auto.reason_


def test_a_large_swarm_fits_the_multi_start_laws_from_one_start_and_says_so():
    """From ``large_swarm`` training runs on (1,000 by default), eff-law is fitted from its first start at a looser tolerance (the stack's
    eff-law member too, so they still share fold fits), the learning curve scores one subset per point, and the
    reason says so; a user's candidate_params win; below it nothing changes (DECISIONS 80)."""
    from types import SimpleNamespace

    from regmix_plugin.fit.base import FitData
    from regmix_plugin.fit.model import _learning_curve

    X, y = synthetic_xy(30)
    kw = dict(candidates=("eff-law", "stack"), n_splits=3,
              candidate_params={"stack": {"member_params": {"lightgbm": {"n_estimators": 20}}}})
    small = AutoPredictor(**kw).fit(X, y)
    large = AutoPredictor(**kw, large_swarm=30).fit(X, y)
    assert "n_starts" not in small._by_label_["eff-law"][0][1] and "large swarm" not in small.reason_
    assert "large_swarm" not in small.selection_
    one = {"n_starts": 1, "ftol": 1e-4}
    assert {k: large._by_label_["eff-law"][0][1][k] for k in one} == one
    assert large._by_label_["stack"][0][1]["member_params"] == {"eff-law": one, "lightgbm": {"n_estimators": 20}}
    assert large.fits_ == small.fits_ == 2 * 3  # eff-law and lightgbm once per fold, shared with the stack
    assert "large swarm (>= 30 runs): eff-law n_starts=1" in large.reason_ and large.selection_["large_swarm"]
    mine = AutoPredictor(**{**kw, "candidate_params": {"eff-law": {"n_starts": 2}}}, large_swarm=30)
    mine._large = mine.is_large(len(y))  # what fit decides; the plan is what it would fit
    plan = {label: spec[1] for label, spec, _ in mine._plan(None, None)}
    assert plan["eff-law"]["n_starts"] == 2 and plan["stack"]["member_params"]["eff-law"] == {"n_starts": 2, "ftol": 1e-4}
    import pytest

    from regmix_plugin.fit.base import FitError

    with pytest.raises(FitError, match="auto.large_swarm"):
        AutoPredictor(large_swarm="many").is_large(30)
    cfg = SimpleNamespace(folds=3, seed=0, predictor="auto")
    for model, subsets in ((small, 2), (large, 1)):
        lc = _learning_curve(model, FitData(X, y), cfg, {}, model.cv_, True)
        assert [p["subsets"] for p in lc["points"]] == [subsets, subsets, 1]
