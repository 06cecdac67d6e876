"""`regmix fit` / `predict` / `optimize` end to end: synthetic runs (always) and a slice of RegMix's data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fit_helpers import synthetic_runs

from regmix_plugin.cli import main
from regmix_plugin.mixture import Mixture
from regmix_plugin.table import write_runs


@pytest.fixture()
def runs_csv(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs(synthetic_runs(40), path)
    return path


def test_fit_predict_optimize_on_synthetic_runs(runs_csv, tmp_path, capsys):
    model = tmp_path / "model"
    rc = main(["fit", "--runs", str(runs_csv), "--target", "0.5*valid/web/loss + 0.5*valid/code/loss",
               "--predictor", "auto", "--params",
               '{"candidates": ["linear", "mixing-law"], "candidate_params": {"eff-law": {"n_starts": 1}}}', "--folds", "3",
               "--no-learning-curve",  # tested on its own below
               "--out", str(model)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| predictor | spearman | pearson | mse | top10_overlap |" in out
    assert "left out 1 run(s)" in out and "r039" in out  # the failed run is reported, not silently dropped
    assert "chosen: " in out

    # predict keeps the input's row order and ids.
    mixtures = pd.read_csv(runs_csv)[["run_id", "weight/web", "weight/code", "weight/books", "weight/math"]].iloc[::-1]
    mixtures.to_csv(tmp_path / "m.csv", index=False)
    assert main(["predict", "--model", str(model), "--mixtures", str(tmp_path / "m.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["index", "prediction"]
    assert pred["index"].astype(str).tolist() == mixtures["run_id"].tolist()

    (tmp_path / "c.yaml").write_text("max: {web: 0.5}\nmin: {math: 0.05}\nprior_pull: {kind: kl, strength: 0.001}\n")
    rc = main(["optimize", "--model", str(model), "--constraints", str(tmp_path / "c.yaml"), "--samples", "2000",
               "--top-k", "32", "--out", str(tmp_path / "regmix.json"), "--report", str(tmp_path / "report")])
    assert rc == 0
    mix = Mixture.load(tmp_path / "regmix.json")
    w = dict(zip(mix.names, mix.weights))
    assert w["web"] <= 0.5 + 1e-6 and w["math"] >= 0.05 - 1e-6
    prov = mix.provenance
    assert {"predictor", "cv", "predicted_target", "predicted_target_uncertainty", "baselines"} <= set(prov)
    assert set(prov["baselines"]) == {"prior", "uniform", "best_proxy_run"}
    assert "prefixes_note" in prov and mix.domains[0].prefixes == ["web"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| predictor | spearman" in md and "weights_vs_prior.png" in md and "Active constraints" in md
    assert (tmp_path / "report" / "interactions.png").stat().st_size > 1000


def test_base_mixture_supplies_prefixes_and_token_caps(runs_csv, tmp_path):
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs_csv), "--target", "valid/web/loss", "--predictor", "mixing-law",
                 "--params", '{"n_starts": 2}', "--folds", "3", "--out", str(model)]) == 0
    base = Mixture.from_dict({"version": 1, "domains": [
        {"name": d, "weight": 0.25, "prefixes": [f"data/{d}/train"], "tokens": 1000} for d in ("web", "code", "books", "math")]})
    base.save(tmp_path / "natural.json")
    (tmp_path / "c.yaml").write_text("target_tokens: 10000\nmax_epochs: 3\n")  # caps at 0.3 each
    assert main(["optimize", "--model", str(model), "--constraints", str(tmp_path / "c.yaml"), "--samples", "1000",
                 "--base-mixture", str(tmp_path / "natural.json"), "--out", str(tmp_path / "r.json")]) == 0
    mix = Mixture.load(tmp_path / "r.json")
    assert mix.domains[0].prefixes == ["data/web/train"] and max(mix.weights) <= 0.3 + 1e-6
    assert "prefixes_note" not in mix.provenance


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--target", "valid/web/loss", "--predictor", "xgb"], "--predictor: unknown value 'xgb'; choose one of linear"),
        (["--target", "valid/nope/loss"], "--target: column 'valid/nope/loss' is not in the runs table"),
        (["--target", "valid/web/loss", "--params", "{bad"], "--params: not valid JSON"),
    ],
)
def test_fit_bad_input_is_one_line(runs_csv, tmp_path, capsys, argv, msg):
    assert main(["fit", "--runs", str(runs_csv), "--out", str(tmp_path / "m"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_optimize_infeasible_constraints_is_one_line(runs_csv, tmp_path, capsys):
    assert main(["fit", "--runs", str(runs_csv), "--target", "valid/web/loss", "--predictor", "linear", "--folds", "3",
                 "--out", str(tmp_path / "m")]) == 0
    (tmp_path / "c.yaml").write_text("min: {web: 0.8, code: 0.5}\n")
    assert main(["optimize", "--model", str(tmp_path / "m"), "--constraints", str(tmp_path / "c.yaml"),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "lower bounds sum to 1.3" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_cli_on_a_slice_of_regmix_data(regmix_data, tmp_path, capsys):
    """RegMix's CSV pair in, regmix.json out; fit on 80 train runs, predict the first test mixtures."""
    mix = pd.read_csv(regmix_data / "train_mixture_1m.csv").head(80)
    loss = pd.read_csv(regmix_data / "train_pile_loss_1m.csv").head(80)
    mix.to_csv(tmp_path / "m.csv", index=False)
    loss.to_csv(tmp_path / "l.csv", index=False)
    assert main(["fit", "--mixtures", str(tmp_path / "m.csv"), "--losses", str(tmp_path / "l.csv"),
                 "--target", "valid/pile_cc/loss", "--predictor", "log-law", "--compare", "linear",
                 "--folds", "3", "--out", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "| log-law |" in out and "| linear |" in out
    pd.read_csv(regmix_data / "test_mixture_1m.csv").head(20).to_csv(tmp_path / "t.csv", index=False)
    assert main(["predict", "--model", str(tmp_path / "model"), "--mixtures", str(tmp_path / "t.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 20
    assert main(["optimize", "--model", str(tmp_path / "model"), "--samples", "5000", "--out", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["provenance"]["predicted_target"] < doc["provenance"]["baselines"]["prior"]["predicted"]


def test_heldout_runs_are_kept_out_of_the_fit_and_scored(tmp_path, capsys):
    """Runs marked split = heldout (as `regmix collect` marks synthesized held-out mixtures) are not fitted on by
    default; the fit scores them and says so; --include-heldout fits on them and says nothing scored the fit."""
    from regmix_plugin.fit.model import FittedModel

    df = synthetic_runs(40)
    df.insert(2, "split", ["heldout" if i % 5 == 0 else "train" for i in range(40)])  # 8 held out, r000 r005 ...
    write_runs(df, tmp_path / "runs.csv")
    base = ["fit", "--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--predictor", "mixing-law",
            "--params", '{"n_starts": 2}', "--folds", "3"]
    assert main(base + ["--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation on 31 runs" in out  # 40 - 1 failed - 8 held out
    assert "held-out: 8 run(s) never fitted on (split = heldout): Spearman" in out
    model = FittedModel.load(tmp_path / "m")
    assert model.n_runs == 31 and model.heldout["runs"] == 8 and not model.heldout["included_in_fit"]
    assert model.heldout["spearman"] > 80  # a real score of the law on runs it never saw
    assert sorted(model.heldout["predictions"]) == [f"r{i:03d}" for i in range(0, 40, 5)]
    from regmix_plugin.optimize.report import write_fit_report

    md = write_fit_report(model, None, tmp_path / "report")[0].read_text()
    assert "Held-out: 8 run(s) never fitted on" in md
    assert main(base + ["--include-heldout", "--out", str(tmp_path / "m2")]) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation on 39 runs" in out and "were fitted on (--include-heldout)" in out
    assert FittedModel.load(tmp_path / "m2").heldout == {"runs": 8, "included_in_fit": True}


def test_a_table_of_heldout_runs_only_is_one_line_and_exit_2(tmp_path, capsys):
    df = synthetic_runs(12)
    df["split"] = "heldout"
    write_runs(df, tmp_path / "runs.csv")
    rc = main(["fit", "--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "--include-heldout" in err and len(err.strip().splitlines()) == 1


def test_fit_prints_a_learning_curve_with_the_promised_points(runs_csv, tmp_path, capsys):
    """CV of the chosen predictor at 50 %, 75 % and 100 % of the runs, and the projection to twice the runs, in
    the output, model.json and the report; --no-learning-curve skips it."""
    from regmix_plugin.fit.model import FittedModel
    from regmix_plugin.optimize.report import write_fit_report

    assert main(["fit", "--runs", str(runs_csv), "--target", "valid/web/loss", "--predictor", "auto", "--params",
                 '{"candidates": ["linear", "mixing-law"], "candidate_params": {"mixing-law": {"n_starts": 1}}, '
                 '"repeats": 2}', "--folds", "3", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    lc = FittedModel.load(tmp_path / "m").learning_curve
    assert [(p["fraction"], p["runs"], p["subsets"]) for p in lc["points"]] == [(0.5, 20, 2), (0.75, 29, 2), (1.0, 39, 2)]  # repeats
    assert "± se over 2 x 3 folds" not in out and "2 x 3-fold CV spearman" in out  # the noise of the choice
    assert lc["projected_runs"] == 78 and lc["projected_spearman"] is not None
    assert lc["projected_gain"] == round(lc["projected_spearman"] - lc["points"][-1]["spearman"], 4)
    assert "learning curve (3-fold CV spearman of mixing-law): 20 runs " in out and "projected with 78 runs" in out
    md = write_fit_report(FittedModel.load(tmp_path / "m"), None, tmp_path / "r")[0].read_text()
    assert "How many runs?" in md and "projected" in md
    assert main(["fit", "--runs", str(runs_csv), "--target", "valid/web/loss", "--predictor", "mixing-law",
                 "--params", '{"n_starts": 1}', "--folds", "3", "--no-learning-curve", "--out", str(tmp_path / "n")]) == 0
    assert "learning curve" not in capsys.readouterr().out and not FittedModel.load(tmp_path / "n").learning_curve


def test_the_projection_follows_a_power_law_and_gives_no_gain_on_a_flat_curve():
    from regmix_plugin.fit.learning_curve import project

    pts = [{"fraction": f, "runs": n, "spearman": 100 - 40 * n ** -0.5} for f, n in ((0.5, 16), (0.75, 24), (1.0, 32))]
    p = project(pts, 64)
    assert abs(p["exponent"] - 0.5) < 1e-6 and abs(p["projected_spearman"] - (100 - 40 * 64 ** -0.5)) < 1e-3
    flat = [dict(q, spearman=90.0 - q["fraction"]) for q in pts]  # falls with more runs
    assert project(flat, 64)["projected_gain"] == 0.0


def test_learning_curve_points_with_fewer_training_runs_than_domains_are_left_out_and_said_so():
    from regmix_plugin.fit.learning_curve import curve_text, learning_curve

    seen = []

    def score(rows, seed):
        seen.append(len(rows))
        return 50.0 + len(rows)

    lc = learning_curve(score, 32, 90.0, 5, 2, n_domains=17)  # 16 runs: folds train on 12 < 17; 24: on 19
    assert seen == [24, 24] and [p["runs"] for p in lc["points"]] == [24, 32]
    assert lc["skipped"] == [{"fraction": 0.5, "runs": 16, "why": "its folds train on fewer runs than the 17 domains"}]
    assert "(not scored: 16 runs, its folds train on fewer runs than the 17 domains)" in curve_text(lc, "eff-law", 5)
    assert lc["projected_spearman"] is None  # two points do not project: the exponent would be their noise
