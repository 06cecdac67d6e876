"""eff-law (fit/efflaw.py): learns its own law, is searchable exactly from mixtures with absent domains,
and rejects bad input with one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.registry import get_predictor, load_predictor
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


@pytest.mark.parametrize("bounds", ["simplex", "caps and mins", "fixed"])
def test_closed_form_optimum_equals_slsqp_within_bounds(bounds):
    X, y = eff_data(64, 0)
    model = get_predictor("eff-law").fit(X, y)
    names, prior = ["a", "b", "c", "d"], np.full(4, 0.25)
    lo, hi = np.zeros(4), np.ones(4)
    if bounds != "simplex":
        lo, hi = np.array([0.0, 0.05, 0.1, 0.0]), np.array([0.5, 0.2, 1.0, 1.0])  # the own domain capped
    if bounds == "fixed":
        lo[1] = hi[1] = 0.15
    closed = search(model, names, prior, lo, hi, SearchConfig(mode="exact"))
    assert (closed.mode, closed.method, closed.evaluations) == ("exact", "closed form", 1)
    assert abs(closed.weights.sum() - 1) < 1e-12 and np.all(closed.weights >= lo - 1e-12) and np.all(closed.weights <= hi + 1e-12)
    model.minimize_on_simplex = lambda lo, hi: None  # this instance has no closed form: SLSQP searches
    slsqp = search(model, names, prior, lo, hi, SearchConfig(mode="exact", n_starts=3))
    assert slsqp.method == "SLSQP"
    assert closed.predicted <= slsqp.predicted + 1e-9
    np.testing.assert_allclose(closed.weights, slsqp.weights, atol=1e-5)
    if bounds != "simplex":
        assert closed.active["a"].startswith("at upper bound") and closed.weights[0] == pytest.approx(0.5)


def test_auto_passes_the_closed_form_through_after_loading(tmp_path):
    X, y = eff_data(64, 0)
    auto = get_predictor("auto", candidates=("eff-law",), baselines=(), column_candidates=(), n_splits=3).fit(X, y)
    auto.save(tmp_path / "auto")
    loaded = load_predictor(tmp_path / "auto")
    lo, hi = np.zeros(4), np.ones(4)
    res = search(loaded, ["a", "b", "c", "d"], np.full(4, 0.25), lo, hi, SearchConfig(mode="exact"))
    assert res.method == "closed form"
    np.testing.assert_allclose(res.weights, auto.model_.minimize_on_simplex(lo, hi), atol=1e-12)


def test_no_closed_form_for_a_convex_law_or_a_prior_pull():
    X, y = eff_data(64, 0)
    model = get_predictor("eff-law").fit(X, y)
    names, prior, lo, hi = ["a", "b", "c", "d"], np.full(4, 0.25), np.zeros(4), np.ones(4)
    pulled = search(model, names, prior, lo, hi, SearchConfig(mode="exact", pull_strength=0.05))
    assert pulled.method == "SLSQP"  # the KL pull makes the problem non-separable in the effective data
    model.params_[-1] = np.log(1.5)  # g > 1: convex in each share, the optimum is a vertex
    assert model.minimize_on_simplex(lo, hi) is None
    assert search(model, names, prior, lo, hi, SearchConfig(mode="exact")).method == "SLSQP"


def test_bad_input_is_a_one_line_error_naming_the_field():
    X, y = eff_data(20, 0)
    with pytest.raises(RegmixError, match=r"eff-law: the target has values <= 0.*positive target"):
        get_predictor("eff-law").fit(X, y - 10.0)
    with pytest.raises(RegmixError, match=r"eff-law.n_starts: 0 must be >= 1"):
        get_predictor("eff-law", n_starts=0).fit(X, y)


def test_the_prior_gives_a_domain_the_runs_never_contain_the_average_domains_weight():
    """No run has domain 2: the data say nothing about s_2. With the prior (the default) log s_2 sits at the
    mean of log s; without it s_2 stays wherever the first start put it. The other domains barely move."""
    def without_domain_2(n, seed, noise):
        rng = np.random.default_rng(seed)
        X = rng.dirichlet(np.full(len(S), 0.5), n)
        X[:, 2] = 0.0
        X /= X.sum(axis=1, keepdims=True)
        return X, C + K * (1.0 + (X**G) @ S) ** (-ALPHA) + noise * rng.normal(size=n)

    X, y = without_domain_2(48, 3, 0.002)
    with_prior = get_predictor("eff-law", n_starts=1).fit(X, y)
    without = get_predictor("eff-law", n_starts=1, prior=0.0).fit(X, y)
    log_s = np.log(with_prior.effective_weights_)
    assert abs(log_s[2] - log_s.mean()) < 1e-3
    free = np.log(without.effective_weights_)
    assert abs(free[2] - free.mean()) > 0.1  # wherever the optimiser's steps left it
    Xt, _ = without_domain_2(100, 4, 0.0)
    assert spearmanr(with_prior.predict(Xt), without.predict(Xt))[0] > 0.999
    with pytest.raises(RegmixError, match=r"eff-law\.prior: -1 must be a number >= 0"):
        get_predictor("eff-law", prior=-1).fit(X, y)


def test_a_tolerance_outside_0_1_is_refused_with_the_field_named():
    import pytest

    from regmix_plugin.fit.base import FitError
    from regmix_plugin.fit.efflaw import EffectiveDataLawPredictor

    X = np.random.default_rng(0).dirichlet(np.ones(3), 12)
    with pytest.raises(FitError, match="eff-law.ftol"):
        EffectiveDataLawPredictor(ftol=0).fit(X, 2.0 + X[:, 0])
