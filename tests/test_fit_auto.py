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
    auto = AutoPredictor(candidates=("linear", "mixing-law"), n_splits=4).fit(X, y)
    scores = {row["predictor"]: row["spearman"] for row in auto.cv_}
    assert scores["linear"] >= scores["mixing-law"]
    assert auto.chosen_ == "mixing-law"
    assert "linear (baseline, not chosen)" in auto.reason_


def test_linear_is_chosen_when_it_is_the_only_candidate():
    X, y = synthetic_xy(30)
    auto = AutoPredictor(candidates=("linear",), n_splits=3).fit(X, y)
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
                         n_splits=3, prefer_smooth=False)
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


def test_a_smooth_law_within_one_standard_error_of_the_best_is_chosen():
    """The rule behind `prefer_smooth` on fixed out-of-fold predictions: a law that trails a tree model by less
    than the standard error of their per-fold difference is chosen, and the record says why."""
    from regmix_plugin.fit.cv import CVResult, kfold_indices

    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    folds = kfold_indices(60, 5, 0)
    tree = y + 0.30 * rng.normal(size=60)
    close_law = tree + 0.05 * rng.normal(size=60)  # within noise of the tree
    far_law = y + 1.5 * rng.normal(size=60)  # clearly worse
    by_label = {"lightgbm": (("lightgbm", {}), "y"), "eff-law": (("eff-law", {}), "y")}
    auto = AutoPredictor(baselines=())
    for law, expect in ((close_law, "eff-law"), (far_law, "lightgbm")):
        results = [CVResult("lightgbm", scores(y, tree), tree), CVResult("eff-law", scores(y, law), law)]
        if expect == "eff-law":  # make the tree the CV leader by a hair
            results[0].scores["spearman"] = max(results[0].scores["spearman"], results[1].scores["spearman"] + 0.01)
        best, sel = auto._choose(results, folds, y, by_label)
        assert best.name == expect and sel["best_by_cv"] == "lightgbm" and sel["smooth_law"] == "eff-law"
        assert (sel["gap"] <= sel["standard_error"]) == (expect == "eff-law")
    auto.prefer_smooth = False
    assert auto._choose(results, folds, y, by_label)[0].name == "lightgbm"
