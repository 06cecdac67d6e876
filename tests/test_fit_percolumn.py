"""One law per column of a composite target (fit/percolumn.py), and `auto` choosing it by CV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from regmix_plugin.cli import main
from regmix_plugin.fit.base import FitError
from regmix_plugin.fit.model import FitConfig, FittedModel, fit_model
from regmix_plugin.fit.percolumn import PerColumnPredictor
from regmix_plugin.fit.registry import get_predictor, load_predictor
from regmix_plugin.table import write_runs

DOMAINS = ("a", "b", "c", "d")


def runs_with_own_domain_laws(n: int = 48, seed: int = 0) -> pd.DataFrame:
    """Each domain's loss follows its own law in its own share (different floors and steepness), as real
    per-domain losses do; the mean of them is not one exponential law of the weights."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(len(DOMAINS), 0.5), n)
    df = pd.DataFrame({"run_id": [f"r{i:02d}" for i in range(n)], "status": "completed"})
    for j, d in enumerate(DOMAINS):
        df[f"weight/{d}"] = X[:, j]
    for j, (d, c, k, t) in enumerate(zip(DOMAINS, (2.0, 2.5, 1.5, 3.0), (1.5, 0.5, 2.0, 0.8), (-9.0, -2.0, -4.0, -20.0))):
        df[f"valid/{d}/loss"] = c + k * np.exp(t * X[:, j]) + 0.002 * rng.normal(size=n)
    return df


def test_fit_sums_one_model_per_column_with_the_target_weights():
    df = runs_with_own_domain_laws()
    X = df[[f"weight/{d}" for d in DOMAINS]].to_numpy()
    Y = df[[f"valid/{d}/loss" for d in DOMAINS]].to_numpy()
    w = [0.1, 0.2, 0.3, 0.4]
    model = PerColumnPredictor("mixing-law", w, {"n_starts": 2}).fit(X, Y)
    alone = [get_predictor("mixing-law", n_starts=2).fit(X, Y[:, j]).predict(X) for j in range(4)]
    np.testing.assert_allclose(model.predict(X), sum(wj * p for wj, p in zip(w, alone)), rtol=1e-12)
    # The analytic gradient is the weighted sum of the members' gradients: check against differences.
    x = np.array([0.4, 0.3, 0.2, 0.1])
    h = 1e-6
    numeric = (model.predict(x[None, :] + h * np.eye(4)) - model.predict(x[None, :])) / h
    np.testing.assert_allclose(model.gradient(x), numeric, rtol=1e-3, atol=1e-6)
    assert model.is_smooth()


def test_wrong_number_of_columns_is_one_line():
    X = np.random.default_rng(0).dirichlet(np.ones(3), 10)
    with pytest.raises(FitError, match=r"^per-column\.fit: Y has 2 column\(s\) but column_weights has 3; give one column per target term$"):
        PerColumnPredictor("linear", [1, 1, 1]).fit(X, np.ones((10, 2)))
    with pytest.raises(FitError, match=r"per-column\.base: 'auto' cannot be the base"):
        PerColumnPredictor("auto").fit(X, np.ones(10))


def test_auto_scores_per_column_forms_and_chooses_one_when_cv_says_so(tmp_path):
    df = runs_with_own_domain_laws()
    params = {"candidates": ["linear", "mixing-law"], "column_candidates": ["mixing-law"], "auxiliary_candidates": [],
              "candidate_params": {"mixing-law": {"n_starts": 2}}, "repeats": 1}
    fitted = fit_model(df, "mean(valid/*/loss)", FitConfig(predictor="auto", params=params, folds=4))
    rows = {r["predictor"]: r for r in fitted.cv}
    assert set(rows) == {"linear", "mixing-law", "mixing-law (per column)"}
    # One law per domain fits these data far better than one law on their mean.
    assert rows["mixing-law (per column)"]["spearman"] > rows["mixing-law"]["spearman"] + 5
    assert fitted.chosen == "mixing-law (per column)"
    assert "mixing-law (per column) has the best 4-fold CV spearman" in fitted.reason
    # Saved and loaded without pickle, it predicts the same.
    fitted.save(tmp_path / "model")
    again = FittedModel.load(tmp_path / "model")
    np.testing.assert_array_equal(again.predictor.predict(fitted.X), fitted.predictor.predict(fitted.X))
    doc = json.loads((tmp_path / "model" / "predictor" / "chosen_model" / "predictor.json").read_text())
    assert doc["name"] == "per-column" and doc["children"] == [f"column_{j}" for j in range(4)]
    assert isinstance(load_predictor(tmp_path / "model" / "predictor" / "chosen_model"), PerColumnPredictor)


def test_a_single_column_target_has_no_per_column_candidates_but_the_auxiliary_ones():
    df = runs_with_own_domain_laws()
    fitted = fit_model(df, "valid/a/loss", FitConfig(predictor="auto", folds=3, params={
        "candidates": ["linear", "mixing-law", "joint-law"], "repeats": 1,
        # the best CV score: the one-standard-error rule would take the more constrained mixing-law, 0.2 behind
        "prefer_smooth": False,
        "candidate_params": {"mixing-law": {"n_starts": 2}, "joint-law": {"eps_inits": [0.03], "n_starts": 2}}}))
    # joint-law is scored once, fitted with the other domains' losses (not also on the target alone).
    assert [r["predictor"] for r in fitted.cv] == ["linear", "mixing-law", "joint-law"]
    assert fitted.chosen == "joint-law"  # on these data its CV rho is highest (99.8 vs mixing-law's 99.6)
    assert fitted.predictor.model_.column_params_.shape[0] == 4  # refit on the target + 3 auxiliary losses
    assert fitted.auxiliary == ["valid/b/loss", "valid/c/loss", "valid/d/loss"]
    no_aux = fit_model(df[[c for c in df.columns if c not in ("valid/b/loss", "valid/c/loss", "valid/d/loss")]],
                       "valid/a/loss", FitConfig(predictor="auto", folds=3, params={
                           "candidates": ["linear", "mixing-law"], "candidate_params": {"mixing-law": {"n_starts": 2}}}))
    assert [r["predictor"] for r in no_aux.cv] == ["linear", "mixing-law"]  # nothing to give joint-law
    assert no_aux.auxiliary == []


def test_cli_per_column_fit_then_optimize(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    write_runs(runs_with_own_domain_laws(), runs)
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs), "--target", "mean(valid/*/loss)", "--predictor", "per-column",
                 "--params", '{"base": "mixing-law", "base_params": {"n_starts": 2}}', "--folds", "3",
                 "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert "| per-column |" in out
    assert main(["optimize", "--model", str(model), "--out", str(tmp_path / "regmix.json")]) == 0
    w = json.loads((tmp_path / "regmix.json").read_text())
    weights = {d["name"]: d["weight"] for d in w["domains"]}
    # Every domain's own loss is steep near zero share, so the optimum keeps every domain in the mixture.
    assert min(weights.values()) > 0.02 and abs(sum(weights.values()) - 1) < 1e-9


def test_cli_joint_law_gets_the_other_losses_as_auxiliaries(tmp_path, capsys):
    """`regmix fit --predictor joint-law` fits the target with every other per-domain loss of the same runs."""
    df = runs_with_own_domain_laws()
    df.loc[df.index[0], "valid/c/loss"] = float("nan")  # a loss missing on one run cannot inform the fit
    runs = tmp_path / "runs.csv"
    write_runs(df, runs)
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs), "--target", "valid/a/loss", "--predictor", "joint-law",
                 "--params", '{"eps_inits": [0.03], "n_starts": 2}', "--folds", "3", "--out", str(model)]) == 0
    assert "| joint-law |" in capsys.readouterr().out
    fitted = load_predictor(model / "predictor")
    others = [c for c in df.columns if c.startswith("valid/") and c not in ("valid/a/loss", "valid/c/loss")]
    assert fitted.column_params_.shape[0] == 1 + len(others)
    assert json.loads((model / "model.json").read_text())["auxiliary_columns"] == others  # recorded, in order
    assert main(["optimize", "--model", str(model), "--out", str(tmp_path / "regmix.json")]) == 0
    assert json.loads((tmp_path / "regmix.json").read_text())["provenance"]["auxiliary_columns"] == others
    X = df[[c for c in df.columns if c.startswith("weight/")]].to_numpy()[1:]
    np.testing.assert_allclose(fitted.predict_columns(X)[:, 0], fitted.predict(X), rtol=1e-12)
    assert spearmanr(fitted.predict(X), df["valid/a/loss"].to_numpy()[1:])[0] > 0.9


def test_column_groups_fit_one_law_per_group_of_columns_that_move_together(tmp_path):
    """With many columns, `groups=G` clusters them (on the training runs) and fits one law per group's mean."""
    from regmix_plugin.fit.percolumn import column_groups

    df = runs_with_own_domain_laws(n=40)
    X = df[[f"weight/{d}" for d in DOMAINS]].to_numpy()
    a, b = df["valid/a/loss"].to_numpy(), df["valid/d/loss"].to_numpy()
    rng = np.random.default_rng(1)
    # Six tasks: three follow domain a's loss, three domain d's, each with its own offset and a little noise.
    Y = np.column_stack([base + off + 0.001 * rng.normal(size=40)
                         for base in (a, b) for off in (0.0, 0.3, 0.6)])
    assert column_groups(Y, 2).tolist() == [0, 0, 0, 1, 1, 1]
    w = np.full(6, 1 / 6)
    model = PerColumnPredictor("mixing-law", w.tolist(), {"n_starts": 2}, groups=2).fit(X, Y)
    assert model.label == "mixing-law (2 column groups)" and len(model.members_) == 2
    np.testing.assert_allclose(model.weights_, [0.5, 0.5])
    group_a = get_predictor("mixing-law", n_starts=2).fit(X, Y[:, :3].mean(axis=1))
    group_d = get_predictor("mixing-law", n_starts=2).fit(X, Y[:, 3:].mean(axis=1))
    np.testing.assert_allclose(model.predict(X), 0.5 * group_a.predict(X) + 0.5 * group_d.predict(X), rtol=1e-12)
    model.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.assignment_.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(FitError, match="per-column.groups"):
        PerColumnPredictor("mixing-law", w.tolist(), groups=-1).fit(X, Y)
