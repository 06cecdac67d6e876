"""One conformance test over every registered predictor (scikit-learn conventions + artifacts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fit_helpers import FAST_PARAMS, synthetic_xy

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.base import NotFittedError
from regmix_plugin.fit.registry import available, get_predictor, load_predictor

X, Y = synthetic_xy(40)
X_NEW, _ = synthetic_xy(15, seed=1)


def test_registry_lists_the_required_predictors():
    assert {"linear", "lightgbm", "mixing-law", "auto"} <= set(available())
    assert set(FAST_PARAMS) == set(available()), "add fast test params for every registered predictor"


def test_unknown_predictor_lists_valid_names():
    with pytest.raises(RegmixError, match=r"unknown value 'xgb'; choose one of .*linear.*lightgbm"):
        get_predictor("xgb")


@pytest.mark.parametrize("name", available())
def test_conformance(name, tmp_path):
    model = get_predictor(name, random_state=3, **FAST_PARAMS[name])
    assert "random_state" in model.get_params()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(X_NEW)
    assert model.fit(X, Y) is model
    pred = model.predict(X_NEW)
    assert pred.shape == (len(X_NEW),) and np.all(np.isfinite(pred))
    # Deterministic under random_state.
    again = get_predictor(name, random_state=3, **FAST_PARAMS[name]).fit(X, Y).predict(X_NEW)
    np.testing.assert_array_equal(pred, again)
    # Wrong number of domains is a clear error, not a numpy broadcast failure.
    with pytest.raises(RegmixError, match="domain columns"):
        model.predict(X_NEW[:, :3])
    # Save/load: identical predictions, and nothing in the folder is a pickle.
    model.save(tmp_path / "m")
    loaded = load_predictor(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X_NEW), pred)
    files = [p for p in (tmp_path / "m").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".npz", ".txt"}
    doc = json.loads((tmp_path / "m" / "predictor.json").read_text())
    assert doc["name"] == name


def test_predictors_learn_the_law():
    """On noise-free-ish mixing-law data, the smooth predictors rank unseen mixtures almost perfectly."""
    from scipy.stats import spearmanr

    Xt, yt = synthetic_xy(60, seed=5, noise=0.0)
    for name in ("mixing-law", "gp", "linear"):
        rho = spearmanr(get_predictor(name, **FAST_PARAMS[name]).fit(X, Y).predict(Xt), yt)[0]
        assert rho > (0.97 if name != "linear" else 0.85), (name, rho)


def test_mixing_law_recovers_parameters():
    Xs, ys = synthetic_xy(80, noise=0.0)
    m = get_predictor("mixing-law").fit(Xs, ys)
    # The law is identified up to a shared shift of t (weights sum to 1): compare differences.
    t = m.t_ - m.t_.mean()
    from fit_helpers import TRUE_T

    np.testing.assert_allclose(t, TRUE_T - TRUE_T.mean(), atol=0.05)


def test_bad_inputs_are_one_line_errors():
    m = get_predictor("linear")
    with pytest.raises(RegmixError, match="rows but y has"):
        m.fit(X, Y[:-1])
    with pytest.raises(RegmixError, match="non-finite"):
        m.fit(X, np.r_[Y[:-1], np.nan])
    with pytest.raises(RegmixError, match="unknown parameter"):
        m.set_params(depth=3)
    with pytest.raises(RegmixError, match="no predictor.json"):
        load_predictor("/nonexistent/dir")



@pytest.mark.parametrize("name", [n for n in available() if callable(getattr(get_predictor(n), "gradient", None))])
def test_analytic_gradients_match_differences(name):
    """The exact optimiser trusts `gradient`; check it against central differences at interior mixtures."""
    model = get_predictor(name, **FAST_PARAMS[name]).fit(X, Y)
    h = 1e-6
    for x in X_NEW[:3] * 0.9 + 0.025:
        fd = [(model.predict((x + h * e)[None])[0] - model.predict((x - h * e)[None])[0]) / (2 * h) for e in np.eye(len(x))]
        np.testing.assert_allclose(model.gradient(x), fd, rtol=1e-4, atol=1e-6)


def test_joint_law_shares_floors_across_columns():
    """joint-law: auxiliary metric columns pin down each domain's floor eps_d; prediction uses the target's law."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(7)
    eps = np.array([0.003, 0.05, 0.01, 0.2])
    A = -rng.uniform(0.05, 0.4, (6, 4))  # six metrics, each its own exponents, one floor per domain

    def metrics(Xm):
        return 2.0 + np.exp(np.log(Xm + eps) @ A.T)

    Xs = rng.dirichlet(np.full(4, 0.4), 60)
    Xt = rng.dirichlet(np.full(4, 0.4), 40)
    Ys = metrics(Xs) * (1 + 0.002 * rng.normal(size=(60, 6)))
    joint = get_predictor("joint-law", eps_inits=[0.03], n_starts=2).fit(Xs, Ys)
    alone = get_predictor("joint-law", eps_inits=[0.03], n_starts=2).fit(Xs, Ys[:, 0])

    def err(m):
        return float(np.max(np.abs(np.log(m.eps_ / eps))))

    assert err(joint) < err(alone) and err(joint) < np.log(2.0), (joint.eps_, alone.eps_)
    assert spearmanr(joint.predict(Xt), metrics(Xt)[:, 0])[0] > 0.99
    # Every column's law is kept; column 0 is what predict returns.
    cols = joint.predict_columns(Xt)
    np.testing.assert_allclose(cols[:, 0], joint.predict(Xt), rtol=1e-12)
    assert min(spearmanr(cols[:, j], metrics(Xt)[:, j])[0] for j in range(6)) > 0.99
    with pytest.raises(RegmixError, match=r"joint-law.fit: Y column\(s\) \[2\]"):
        get_predictor("joint-law").fit(Xs, np.c_[Ys[:, :2], -Ys[:, 2]])
