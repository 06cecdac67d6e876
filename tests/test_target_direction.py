"""Direction of a target (issue 26): an accuracy is maximised end to end, the default comes from the metric's name
and is printed, `auto` skips a candidate that cannot fit a target, and the scaling laws refuse accuracies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.targets import parse_target
from regmix_plugin.mixture import Mixture
from regmix_plugin.table import metric_direction, write_runs

BEST = np.array([0.6, 0.3, 0.1])  # the mixture with the highest accuracy, by construction
DOMAINS = ["web", "code", "books"]


def accuracy_runs(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Runs whose accuracy peaks at BEST (a smooth bump, small noise) and whose loss is the accuracy's mirror."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n)
    acc = 0.7 - 0.8 * ((W - BEST) ** 2).sum(axis=1) + rng.normal(0, 0.002, n)
    df = pd.DataFrame({"run_id": [f"r{i:02d}" for i in range(n)], "status": "completed"})
    for j, d in enumerate(DOMAINS):
        df[f"weight/{d}"] = W[:, j]
    df["lmeval/arc_easy/acc"] = acc
    df["lmeval/arc_easy/acc_stderr"] = 0.01
    df["valid/web/loss"] = 3.0 - acc
    df["neg_acc"] = -acc  # the old workaround: a negated column
    return df


@pytest.fixture()
def runs_csv(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs(accuracy_runs(), path)
    return path


def test_default_direction_from_the_metric_name():
    assert metric_direction("lmeval/arc_easy/acc") == "maximize"
    assert metric_direction("lmeval/hellaswag/acc_norm") == "maximize"
    assert metric_direction("lmeval/squad/exact_match,none") == "maximize"
    assert metric_direction("valid_avg") == "maximize"
    assert metric_direction("valid/web/loss") == "minimize"
    assert metric_direction("valid/arc/bpb") == "minimize"
    assert metric_direction("lmeval/wikitext/word_perplexity") == "minimize"
    assert metric_direction("tokens") is None
    df = accuracy_runs(8)
    t = parse_target("mean(lmeval/*/acc)", df)
    assert t.maximize and "default from the metric name 'acc'" in t.direction_source
    assert parse_target("valid/web/loss", df).direction == "minimize"
    assert parse_target("neg_acc", df).direction == "minimize"  # unknown name: minimise, and it says so
    assert "pass --maximize" in parse_target("neg_acc", df).direction_source
    assert parse_target("neg_acc", df, "maximize").direction_source == "--maximize"
    with pytest.raises(RegmixError, match="pass --maximize or --minimize"):
        parse_target("lmeval/arc_easy/acc + valid/web/loss", df)


def test_accuracy_is_maximised_end_to_end(runs_csv, tmp_path, capsys):
    """The best mixture is known (BEST); fit + optimize on the accuracy must find it, and the report must say
    which way the target was optimised."""
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs_csv), "--target", "lmeval/arc_easy/acc", "--folds", "4",
                 "--params", '{"candidates": ["lightgbm", "mixing-law", "eff-law", "linear"]}', "--quiet",
                 "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert "direction: maximize (higher is better; default from the metric name 'acc'" in out
    doc = json.loads((model / "model.json").read_text())
    assert doc["target"]["direction"] == "maximize"
    df = accuracy_runs()
    assert doc["best_run"]["run_id"] == df.loc[df["lmeval/arc_easy/acc"].idxmax(), "run_id"]  # the highest
    assert main(["optimize", "--model", str(model), "--samples", "4000", "--top-k", "32",
                 "--out", str(tmp_path / "regmix.json"), "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "direction: maximize (higher is better" in out
    mix = Mixture.load(tmp_path / "regmix.json")
    w = np.array([mix.weight_of(d) for d in DOMAINS])
    assert np.abs(w - BEST).max() < 0.12, w
    prov = mix.provenance
    assert prov["direction"] == "maximize"
    assert prov["predicted_target"] >= prov["baselines"]["uniform"]["predicted"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**Direction: MAXIMIZE lmeval/arc_easy/acc (higher is better).**" in md

    # The same runs with the direction forced the wrong way land far from BEST: the flag is what steers it.
    assert main(["fit", "--runs", str(runs_csv), "--target", "lmeval/arc_easy/acc", "--minimize", "--folds", "4",
                 "--predictor", "lightgbm", "--quiet", "--out", str(tmp_path / "m2")]) == 0
    assert main(["optimize", "--model", str(tmp_path / "m2"), "--samples", "4000", "--top-k", "32",
                 "--out", str(tmp_path / "wrong.json")]) == 0
    wrong = Mixture.load(tmp_path / "wrong.json")
    assert np.abs(np.array([wrong.weight_of(d) for d in DOMAINS]) - BEST).max() > 0.25


def test_auto_skips_a_candidate_that_cannot_fit_a_negated_target(runs_csv, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs_csv), "--target", "neg_acc", "--minimize", "--folds", "4", "--quiet",
                 "--params", '{"candidates": ["lightgbm", "mixing-law", "eff-law", "stack"]}', "--out", str(model)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split("|")[1].strip(): ln for ln in out.splitlines() if ln.startswith("| ")}
    # No scores, and a note saying why (DECISIONS 68, 78: the table never shows a number for it).
    assert "| - | - | - | - |" in rows["mixing-law"]
    assert "skipped: mixing-law: the target has values <= 0" in rows["mixing-law"]
    assert "skipped:" in rows["stack"]  # its member eff-law cannot fit either
    doc = json.loads((model / "model.json").read_text())
    assert doc["chosen"] == "lightgbm"
    for name in ("mixing-law", "eff-law", "stack"):
        assert f"{name} skipped:" in doc["reason"]
    assert main(["optimize", "--model", str(model), "--samples", "2000", "--top-k", "32",
                 "--out", str(tmp_path / "m.json"), "--report", str(tmp_path / "rep")]) == 0
    assert "skipped: mixing-law" in (tmp_path / "rep" / "report.md").read_text()


def test_scaling_laws_refuse_accuracy_metrics(tmp_path, capsys):
    from regmix_plugin.scale.laws import extrapolate_size

    df = accuracy_runs(6)
    tables = {n: df.assign(**{"lmeval/arc_easy/acc": df["lmeval/arc_easy/acc"] + k}) for k, n in enumerate((1e6, 4e6, 1.6e7))}
    with pytest.raises(RegmixError, match="accuracy-like metric .*--metric 'valid/\\*/loss'"):
        extrapolate_size(tables, 1e8, metrics=["lmeval/*/acc"])


def test_fit_mixture_tool_passes_the_direction(runs_csv, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "tools/fit_mixture.py", "--runs", str(runs_csv), "--target", "neg_acc",
                        "--maximize", "--predictor", "lightgbm", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert r.returncode == 0, r.stderr
    assert "direction: maximize (higher is better; --maximize)" in r.stdout
