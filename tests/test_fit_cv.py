"""Cross-validation scores and `auto`'s choice, on data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import synthetic_xy

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.cv import kfold_indices, scores
from regmix_plugin.fit.registry import get_predictor


def test_scores_on_known_predictions():
    y = np.arange(20, dtype=float)
    s = scores(y, y * 2 + 1)
    assert s["spearman"] == pytest.approx(100) and s["pearson"] == pytest.approx(100)
    assert s["top10_overlap"] == 100.0 and s["mse"] == pytest.approx(np.mean((y + 1) ** 2))
    assert scores(y, -y)["spearman"] == pytest.approx(-100) and scores(y, -y)["top10_overlap"] == 0.0


def test_folds_partition_the_runs():
    folds = kfold_indices(23, 5, random_state=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    with pytest.raises(RegmixError, match="cannot be split into 5 folds"):
        kfold_indices(3, 5, 0)


def test_auto_picks_the_law_on_law_data_and_says_why():
    X, y = synthetic_xy(60, noise=0.002)
    auto = get_predictor("auto", candidates=["linear", "mixing-law"], n_splits=3).fit(X, y)
    assert auto.chosen_ == "mixing-law"
    assert "mixing-law has the best 3-fold CV spearman" in auto.reason_ and "linear" in auto.reason_
    rows = {r["predictor"]: r for r in auto.cv_}
    assert rows["mixing-law"]["spearman"] > rows["linear"]["spearman"]
    np.testing.assert_array_equal(auto.predict(X), get_predictor("mixing-law").fit(X, y).predict(X))


def test_stack_weights_members_by_out_of_fold_fit():
    X, y = synthetic_xy(60, noise=0.002)
    stack = get_predictor("stack", members=["linear", "mixing-law"], n_splits=3).fit(X, y)
    assert stack.weights_[1] > stack.weights_[0] >= 0  # the true law gets the weight
    with pytest.raises(RegmixError, match="cannot be a member"):
        get_predictor("stack", members=["auto"]).fit(X, y)
