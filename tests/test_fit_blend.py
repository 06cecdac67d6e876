"""law-blend: the out-of-fold blend of log-laws over a grid of floors eps."""

from __future__ import annotations

import numpy as np
import pytest

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.base import is_smooth
from regmix_plugin.fit.registry import get_predictor


def _power_law_runs(n: int, eps: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Runs whose loss follows the log-law with floor ``eps``; half the weights are zero, as in RegMix's runs."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(4, 0.4), n)
    X[X < 0.05] = 0.0
    X /= X.sum(axis=1, keepdims=True)
    a = np.array([-0.4, -0.1, -0.05, 0.0])
    return X, 2.0 + np.exp(np.log(X + eps) @ a) + 0.002 * rng.normal(size=n)


def test_blend_weights_the_true_floor_most():
    X, y = _power_law_runs(60, eps=0.1)
    m = get_predictor("law-blend", eps_grid=[0.001, 0.1], n_starts=2, n_splits=3).fit(X, y)
    assert np.all(m.weights_ >= 0)
    assert m.weights_[1] > m.weights_[0], m.weights_
    assert is_smooth(m)
    Xt, yt = _power_law_runs(40, eps=0.1, seed=1)
    assert np.corrcoef(m.predict(Xt), yt)[0, 1] > 0.99


def test_blend_rejects_a_bad_grid():
    X, y = _power_law_runs(20, eps=0.1)
    with pytest.raises(RegmixError, match=r"law-blend.eps_grid: .* positive"):
        get_predictor("law-blend", eps_grid=[0.0, 0.1]).fit(X, y)
