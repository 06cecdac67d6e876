"""The batched law solver: a batch gives each series the fit it gets alone, groups share their exponent, and
both signs of the exponent are found when the bounds allow them (the continual-training law)."""

from __future__ import annotations

import numpy as np
import pytest

from regmix_plugin.laws.solver import solve_laws


def _curves(rng, n, sd=0.003):
    out = []
    for _ in range(n):
        s = np.arange(50.0, 1001.0, 50.0)
        e, x0, a = rng.uniform(1.0, 3.0), rng.uniform(10, 200), rng.uniform(0.2, 1.2)
        out.append((np.log(s), (e + (x0 / s) ** a) * np.exp(rng.normal(0, sd, s.size)), (e, x0, a)))
    return out


def test_a_batch_fits_each_series_as_it_would_be_fitted_alone():
    rng = np.random.default_rng(0)
    curves = _curves(rng, 12)
    series = [(z, y) for z, y, _ in curves]
    e, beta, gamma, loss = solve_laws(series, np.arange(12), 1e-3, (None, 0.0), 500)
    for i, (z, y) in enumerate(series):
        e1, b1, g1, l1 = solve_laws([(z, y)], [0], 1e-3, (None, 0.0), 500)
        assert loss[i] == pytest.approx(l1[0], rel=1e-6)
        assert gamma[i] == pytest.approx(g1[0], rel=1e-3, abs=1e-6)
        # And close to the truth 3x past the data.
        E, x0, a = curves[i][2]
        pred = np.exp(np.logaddexp(e[i], beta[i] + gamma[i] * np.log(3000.0)))
        assert pred == pytest.approx(E + (x0 / 3000.0) ** a, rel=0.01)


def test_groups_share_their_exponent():
    rng = np.random.default_rng(1)
    s = np.arange(20.0, 1001.0, 20.0)
    series, groups = [], []
    for g, a in enumerate((0.3, 0.8)):
        for e in (1.5, 2.0, 2.5):
            series.append((np.log(s), (e + (40 / s) ** a) * np.exp(rng.normal(0, 0.002, s.size))))
            groups.append(g)
    e, beta, gamma, loss = solve_laws(series, np.array(groups), 1e-3, (None, 0.0), 500)
    assert len(set(np.round(gamma[:3], 12))) == 1 and len(set(np.round(gamma[3:], 12))) == 1
    assert -gamma[0] == pytest.approx(0.3, rel=0.1) and -gamma[3] == pytest.approx(0.8, rel=0.1)
    assert np.exp(e) == pytest.approx([1.5, 2.0, 2.5] * 2, rel=0.03)
    assert loss[0] == loss[2] and loss[3] == loss[5]  # the group's mean objective


@pytest.mark.parametrize("t", [-3.0, 2.0])
def test_an_exponential_in_either_direction_when_gamma_is_unbounded(t):
    p = np.linspace(0, 1, 9)
    y = 2.0 + 0.4 * np.exp(t * p)
    e, beta, gamma, _ = solve_laws([(p, y)], [0], 1e-3, (None, None), 500)
    assert gamma[0] == pytest.approx(t, rel=0.01)
    assert np.exp(e[0]) == pytest.approx(2.0, rel=0.01)
