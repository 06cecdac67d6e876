"""eff-law (fit/efflaw.py): learns its own law, is searchable exactly from mixtures with absent domains,
and rejects bad input with one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.registry import get_predictor
from regmix_plugin.optimize.search import SearchConfig, search

# Domain 0 is the target's own domain, 1 a related one, 2 and 3 unrelated.
S = np.array([40.0, 8.0, 0.3, 0.05])
G, ALPHA, C, K = 0.6, 0.4, 2.0, 3.0


def eff_data(n: int, seed: int, noise: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Sparse Dirichlet mixtures (many exact zeros, as in RegMix's sampling) and the effective-data law."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(len(S), 0.5), n)
    X[rng.random(X.shape) < 0.3] = 0.0
    X[X.sum(axis=1) == 0, 3] = 1.0
    X /= X.sum(axis=1, keepdims=True)
    y = C + K * (1.0 + (X**G) @ S) ** (-ALPHA) + noise * rng.normal(size=n)
    return X, y


def test_recovers_the_effective_data_law_and_ranks_unseen_mixtures():
    X, y = eff_data(64, 0)
    Xt, yt = eff_data(200, 1, noise=0.0)
    model = get_predictor("eff-law").fit(X, y)
    g = float(np.exp(model.params_[-1]))
    assert abs(g - G) < 0.1, g
    s = model.effective_weights_
    assert s[0] > s[1] > s[2], s  # own domain > related > unrelated
    rho = spearmanr(model.predict(Xt), yt)[0]
    assert rho > 0.99, rho
    # The log-law cannot express domains substituting for each other, and ranks worse on the same runs.
    assert rho > spearmanr(get_predictor("log-law", n_starts=2).fit(X, y).predict(Xt), yt)[0]


def test_exact_search_from_mixtures_with_absent_domains_beats_the_sample_search():
    X, y = eff_data(64, 0)
    model = get_predictor("eff-law").fit(X, y)
    g = model.gradient(np.array([1.0, 0.0, 0.0, 0.0]))  # an absent domain: large but finite marginal value
    assert np.all(np.isfinite(g)) and g[1] < 0
    names, prior = ["a", "b", "c", "d"], np.full(4, 0.25)
    lo, hi = np.zeros(4), np.ones(4)
    exact = search(model, names, prior, lo, hi, SearchConfig(mode="exact", seed=0))
    sample = search(model, names, prior, lo, hi, SearchConfig(mode="sample", n_samples=20_000, top_k=128, seed=0))
    assert exact.mode == "exact" and abs(exact.weights.sum() - 1) < 1e-9 and np.all(exact.weights >= 0)
    assert exact.predicted <= sample.predicted + 1e-9
    # The law's optimum keeps most of the target's own domain and some of the related one.
    assert exact.weights[0] == exact.weights.max() and exact.weights[1] > 0


def test_bad_input_is_a_one_line_error_naming_the_field():
    X, y = eff_data(20, 0)
    with pytest.raises(RegmixError, match=r"eff-law: the target has values <= 0.*positive target"):
        get_predictor("eff-law").fit(X, y - 10.0)
    with pytest.raises(RegmixError, match=r"eff-law.n_starts: 0 must be >= 1"):
        get_predictor("eff-law", n_starts=0).fit(X, y)
