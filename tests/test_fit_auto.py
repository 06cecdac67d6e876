"""`auto` scores the linear baseline but does not choose it while a law or tree model is available."""

from __future__ import annotations

import numpy as np
from fit_helpers import synthetic_xy

from regmix_plugin.fit.auto import AutoPredictor


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
