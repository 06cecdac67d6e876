"""Constrained search over the simplex: bounds, fixed weights, token caps, infeasibility, RegMix sampling."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import DOMAINS, synthetic_xy

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.linear import LinearPredictor
from regmix_plugin.fit.mixing_law import MixingLawPredictor
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.optimize.search import SearchConfig, project_bounded_simplex, search

NAMES = list(DOMAINS)
PRIOR = np.full(4, 0.25)


def _linear(coef):
    m = LinearPredictor()
    m.coef_, m.intercept_, m.n_features_in_ = np.asarray(coef, float), 1.0, len(coef)
    return m


def _run(model, cons: Constraints, mode="exact", tokens=None):
    lo, hi, src = cons.bounds(NAMES, tokens)
    return search(model, NAMES, PRIOR, lo, hi, SearchConfig(mode=mode, n_samples=2000, top_k=16), src)


def test_projection_lands_on_the_bounded_simplex():
    rng = np.random.default_rng(0)
    lo, hi = np.array([0.1, 0, 0, 0]), np.array([0.5, 0.3, 1, 1])
    W = project_bounded_simplex(rng.normal(size=(50, 4)), lo, hi)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(W >= lo - 1e-12) and np.all(W <= hi + 1e-12)


def test_exact_search_finds_the_known_linear_optimum_under_bounds():
    # Loss falls fastest with 'web', then 'code': the optimum fills web to its max, then code.
    model = _linear([-3.0, -2.0, 0.0, 1.0])
    res = _run(model, Constraints(max={"web": 0.6}, min={"math": 0.05}))
    np.testing.assert_allclose(res.weights, [0.6, 0.35, 0.0, 0.05], atol=1e-6)
    assert res.active == {"web": "at upper bound (max)", "math": "at min"}


def test_fixed_weights_and_token_caps_are_respected():
    model = _linear([-3.0, -2.0, -1.0, 1.0])
    cons = Constraints(fixed={"books": 0.2}, target_tokens=1000, max_epochs=2, tokens={"web": 150})
    tokens = {"web": 10**6, "code": 10**6, "books": 10**6, "math": 10**6}
    res = _run(model, cons, tokens=tokens)
    assert res.weights[2] == pytest.approx(0.2)
    assert res.weights[0] == pytest.approx(0.3, abs=1e-6)  # cap = 150 tokens x 2 epochs / 1000
    assert res.active["web"] == "at upper bound (token cap)" and res.active["books"] == "fixed"


def test_sampling_mode_averages_the_top_k_within_bounds():
    X, y = synthetic_xy(60)
    model = MixingLawPredictor(n_starts=2).fit(X, y)
    res = _run(model, Constraints(max={"web": 0.4}), mode="sample")
    assert res.mode == "sample" and res.weights[0] <= 0.4 + 1e-9
    assert res.weights.sum() == pytest.approx(1.0)
    exact = _run(model, Constraints(max={"web": 0.4}), mode="exact")
    assert exact.predicted <= res.predicted + 1e-9


@pytest.mark.parametrize(
    "cons,msg",
    [
        (Constraints(min={"web": 0.7, "code": 0.5}), "lower bounds sum to 1.2"),
        (Constraints(max={"web": 0.1, "code": 0.1, "books": 0.1, "math": 0.1}), "upper bounds sum to 0.4"),
        (Constraints(min={"nope": 0.1}), "min.nope: no such domain"),
        (Constraints(target_tokens=100), "tokens.web: unknown available tokens"),
    ],
)
def test_infeasible_or_bad_constraints_are_one_line_errors(cons, msg):
    with pytest.raises(RegmixError, match=msg):
        cons.bounds(NAMES, {})


def test_constraint_values_are_validated(tmp_path):
    with pytest.raises(RegmixError, match=r"max.web: 1.5 must be a number in \[0, 1\]"):
        Constraints(max={"web": 1.5})
    p = tmp_path / "c.yaml"
    p.write_text("maxx: {web: 0.2}\n")
    with pytest.raises(RegmixError, match="maxx: unknown key"):
        Constraints.load(p)


def test_prior_pull_moves_toward_the_prior():
    model = _linear([-3.0, -2.0, 0.0, 1.0])
    lo, hi, src = Constraints().bounds(NAMES)
    free = search(model, NAMES, PRIOR, lo, hi, SearchConfig(mode="exact", n_samples=500), src)
    pulled = search(model, NAMES, PRIOR, lo, hi, SearchConfig(mode="exact", n_samples=500, pull_strength=2.0), src)
    assert np.abs(pulled.weights - PRIOR).sum() < np.abs(free.weights - PRIOR).sum()


def test_a_token_cap_below_a_minimum_names_the_cap():
    cons = Constraints(min={"web": 0.3}, target_tokens=1000, max_epochs=0.5, tokens={"web": 100})
    with pytest.raises(RegmixError, match=r"^min.web: lower bound 0.3 exceeds its upper bound 0.05 \(its token cap"):
        cons.bounds(NAMES, {"code": 1000, "books": 1000, "math": 1000})
