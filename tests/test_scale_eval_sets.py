"""The scaling stage with evaluation sets that are not training domains, mixtures matched within a tolerance,
law settings that choose themselves, and parameter counts that are never read off a label.

Curves here follow a known law, L = E(mixture, set) + (N0/N)^0.3 + (s0/s)^0.5, with 0.1 % noise, so every
stage has a right answer to be checked against."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.scale.match import match_tables
from regmix_plugin.scale.laws import StepFitConfig, extrapolate_size, extrapolate_steps
from regmix_plugin.scale.params import parse_params

TRAIN = ("a", "b", "c")
# Five evaluation sets: one training domain, three sets no run trains on, one downstream-style metric.
SETS = {"lm loss validation-a": "valid/a/loss", "lm loss validation-wiki": "valid/wiki/loss",
        "lm loss validation-books": "valid/books/loss", "lm loss validation-news": "valid/news/loss",
        "valid/arc_easy/bpb": "valid/arc_easy/bpb"}
MIXTURES = [(1 / 3, 1 / 3, 1 / 3), (0.6, 0.3, 0.1), (0.1, 0.6, 0.3), (0.3, 0.1, 0.6), (0.15, 0.15, 0.7),
            (0.5, 0.45, 0.05)]
STEPS = np.arange(50, 1501, 50)


def law(tag: str, w, n, s):
    k = list(SETS).index(tag)
    pull = np.array([[1.0, 0.1, 0.1], [0.4, 0.5, 0.2], [0.2, 0.3, 0.6], [0.3, 0.6, 0.1], [0.5, 0.2, 0.5]])[k]
    floor = 1.2 + 0.3 * k + float(pull @ np.exp(-3 * np.asarray(w)))
    return floor + (2e5 * (1 + k) / n) ** 0.3 + (40 / s) ** 0.5


def write_run(run_dir, w, n, rng, decimals=None):
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True)
    ws = [round(x, decimals) for x in w] if decimals else list(w)
    (run_dir / "mixture.json").write_text(json.dumps({"domains": [{"name": d, "weight": x} for d, x in zip(TRAIN, ws)]}))
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for s in STEPS:
        for tag in SETS:
            writer.add_scalar(tag, law(tag, w, n, s) * float(np.exp(rng.normal(0, 1e-3))), int(s))
    writer.close()


def test_three_training_domains_five_evaluation_sets_through_every_stage(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sizes = [1e6, 3e6, 1e7, 3e7]
    target = 1e8
    for n in sizes + [target]:
        for j, w in enumerate(MIXTURES):
            # The target size's runs record their weights to 4 decimals (0.3333): matched within 1e-4.
            write_run(tmp_path / f"n{n:g}" / f"m{j}", w, n, rng, decimals=4 if n == target else None)

    # 1. Step laws per size, from the first third of each curve, extrapolated 3x.
    for n in sizes:
        assert main(["scale", "fit", str(tmp_path / f"n{n:g}"), "--target", "1500", "--max-step", "500",
                     "--params", f"{n:g}", "--out", str(tmp_path / f"steps{n:g}")]) == 0
        doc = json.loads((tmp_path / f"steps{n:g}" / "step_laws.json").read_text())
        assert doc["settings"]["how"] == "held-out" and len(doc["settings"]["scores"]) >= 2
        assert set(doc["runs"]["m0"]) == set(SETS.values())
    out = capsys.readouterr().out
    assert "step law settings: alpha" in out and "non-embedding parameters: 1,000,000 (as given)" in out
    ext = pd.read_csv(tmp_path / "steps1e+06" / "extrapolated.csv")
    assert sorted(c for c in ext.columns if c.startswith("weight/")) == ["weight/a", "weight/b", "weight/c"]
    assert sorted(c for c in ext.columns if c.startswith("valid/")) == sorted(SETS.values())

    # The measured table at the target size, collected from its event files.
    assert main(["collect", str(tmp_path / f"n{target:g}"), "--out", str(tmp_path / "actual.csv")]) == 0
    actual = pd.read_csv(tmp_path / "actual.csv")
    assert set(actual["status"]) == {"imported"} and set(actual["step"]) == {1500}

    # 2. Size laws across the 4 sizes (counts from the tables' params column) to the target size.
    args = ["scale", "predict", "--target-params", f"{target:g}", "--out", str(tmp_path / "pred.csv"),
            "--actual", str(tmp_path / "actual.csv")]
    for n in sizes:
        args += ["--scale", str(tmp_path / f"steps{n:g}" / "extrapolated.csv")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "size 3,000,000 non-embedding parameters (from the table's params column" in captured.out
    assert "size law settings: alpha" in captured.out and "the largest size (3e+07) held out" in captured.out
    assert "| valid/arc_easy/bpb |" in captured.out and "overall: MARE" in captured.out
    assert "note:" not in captured.err  # every mixture matched, none dropped
    doc = json.loads((tmp_path / "pred_size_laws.json").read_text())
    assert sorted(doc["metrics"]) == sorted(SETS.values()) and doc["dropped"] == []
    assert doc["settings"]["how"] == "held-out"
    overall = doc["actual"]["overall"]
    assert overall["mixtures"] == 6 and overall["n"] == 30
    assert overall["mare"] < 0.01 and abs(overall["bias"]) < 0.01
    assert overall["pairs_in_order_mean"] >= 0.8
    mixtures = doc["actual"]["mixtures"]
    assert sorted(m["actual_rank"] for m in mixtures) == [1, 2, 3, 4, 5, 6]
    for row in doc["actual"]["metrics"]:
        assert row["mare"] < 0.02, row
    assert (tmp_path / "pred_vs_actual.png").stat().st_size > 1000

    # 3. Rank check over all five evaluation sets.
    assert main(["scale", "rank-check", str(tmp_path / "steps1e+06" / "extrapolated.csv"), str(tmp_path / "actual.csv"),
                 "--out", str(tmp_path / "rc.json")]) == 0
    rc = json.loads((tmp_path / "rc.json").read_text())
    assert {r["metric"] for r in rc["rows"]} == set(SETS.values())

    # 4. The mixing law fitted on a set that is not a training domain.
    assert main(["fit", "--runs", str(tmp_path / "pred.csv"), "--target", "valid/wiki/loss", "--predictor", "linear",
                 "--folds", "3", "--out", str(tmp_path / "model")]) == 0
    assert json.loads((tmp_path / "model" / "model.json").read_text())["target"]["expr"] == "valid/wiki/loss"


def _tables(rng, sizes, mixtures):
    tables = {}
    for n in sizes:
        rows = [{"run_id": f"n{n:g}-{j}", "status": "completed", "weight/web": w, "weight/code": 1 - w,
                 "valid/web/loss": (2.0 + (1e5 / n) ** 0.3) * (1 + rng.normal(0, 1e-3)) + w,
                 "valid/books/loss": 2.5 + (3e5 / n) ** 0.3 - 0.5 * w} for j, w in enumerate(mixtures)]
        tables[n] = pd.DataFrame(rows)
    return tables


def test_mixtures_match_within_a_tolerance_and_every_drop_is_named(tmp_path, capsys):
    from regmix_plugin.table import write_runs

    rng = np.random.default_rng(1)
    mixtures = [0.015625, 0.2, 0.4, 0.6, 0.8]
    tables = _tables(rng, [1e6, 4e6, 1.6e7], mixtures)
    tables[4e6].loc[0, ["weight/web", "weight/code"]] = [0.01562, 0.98438]  # rounded when it was logged
    tables[1.6e7] = tables[1.6e7].drop(index=4)  # 0.8 was not run at the largest size
    extra = tables[4e6].iloc[[2]].assign(run_id="n4e6-extra", **{"weight/web": 0.5, "weight/code": 0.5})
    tables[4e6] = pd.concat([tables[4e6], extra], ignore_index=True)

    res = extrapolate_size(tables, 1e8)
    assert len(res.table) == 4 and res.table["run_id"].tolist() == ["n1e+06-0", "n1e+06-1", "n1e+06-2", "n1e+06-3"]
    assert any(d.startswith("size 1e+06 run n1e+06-4: no mixture within 0.0001 in size 1.6e+07") for d in res.dropped)
    assert "size 4e+06 run n4e6-extra: its mixture is not in every table; left out" in res.dropped

    # Near misses are named with the nearest run and the weight that differs.
    small, far = tables[1e6].copy(), tables[1e6].copy()
    far["weight/web"] += 3e-4
    far["weight/code"] -= 3e-4
    with pytest.raises(RegmixError, match=r"closest: a run n1e\+06-0 vs b run n1e\+06-0: nearest is run n1e\+06-0, "
                                          r"0.0003 away \(weight/web 0.015625 vs 0.015925\); raise --match-tol"):
        match_tables([small, far], ["a", "b"])
    assert len(match_tables([small, far], ["a", "b"], tol=1e-3).tables[0]) == 5

    # The CLI keeps the fitted laws when --actual cannot be scored, and says so.
    paths = {n: write_runs(t, tmp_path / f"runs_{n:g}.csv") for n, t in tables.items()}
    write_runs(far, tmp_path / "actual.csv")
    args = ["scale", "predict", "--target-params", "1e8", "--out", str(tmp_path / "pred.csv"),
            "--actual", str(tmp_path / "actual.csv")]
    for n, p in paths.items():
        args += ["--scale", f"{n:g}={p}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no mixture appears in all tables" in err and "raise --match-tol" in err
    assert f"(predictions and size laws are saved: {tmp_path / 'pred.csv'}" in err
    assert "note: size 1e+06 run n1e+06-4: no mixture within 0.0001 in size 1.6e+07" in err
    laws = json.loads((tmp_path / "pred_size_laws.json").read_text())
    assert len(laws["runs"]) == 4 and len(laws["dropped"]) == 3 and "actual" not in laws
    assert main(args + ["--match-tol", "1e-3"]) == 0
    captured = capsys.readouterr()
    assert "overall: MARE" in captured.out
    laws = json.loads((tmp_path / "pred_size_laws.json").read_text())
    assert laws["actual"]["overall"]["mixtures"] == 4
    assert any("n1e+06-4: its mixture is not in every table" in d for d in laws["actual"]["dropped"])


def test_parameter_counts_are_numbers_or_known_models(capsys):
    assert parse_params("pythia-70m", "--scale") == (18_915_328.0, "non-embedding parameters of pythia-70m")
    assert parse_params("Pythia-1B", "--scale")[0] == 805_736_448.0  # the Pythia paper's table 1
    assert parse_params("pythia-410m-deduped", "--scale")[0] == 302_311_424.0
    assert parse_params("1.89e7", "--scale") == (1.89e7, "as given")
    with pytest.raises(RegmixError, match=r"--scale: '70M' is not a parameter count \(a label like '70M' is not a "
                                          r"non-embedding count.*known model name \(pythia-70m, pythia-160m"):
        parse_params("70M", "--scale")
    assert main(["scale", "predict", "--scale", "70M=x.csv", "--target-params", "1e9", "--out", "p.csv"]) == 2
    assert "'70M' is not a parameter count" in capsys.readouterr().err


def test_step_settings_choose_a_warm_up_cut_and_beat_the_previous_defaults():
    """Curves whose first evals sit below the law (a warm-up transient): the held-out tail picks a cut."""
    rng = np.random.default_rng(2)
    steps = np.arange(20, 1201, 20)
    runs = {}
    for j in range(6):
        e = 2.0 + 0.1 * j
        curves = {}
        for k, name in enumerate(("valid/web/loss", "valid/wiki/loss")):
            y = e + 0.3 * k + (60 / steps) ** 0.45
            y[:5] -= np.linspace(0.6, 0.05, 5)  # the transient of the first 100 steps
            curves[name] = y * np.exp(rng.normal(0, 1e-3, steps.size))
        runs[f"r{j}"] = ({"web": 0.5, "code": 0.5}, pd.DataFrame({"step": steps, **curves}))

    def error(res):
        return np.mean([abs(res.tables[3600.0].loc[j, m] / (2.0 + 0.1 * j + 0.3 * k + (60 / 3600) ** 0.45) - 1)
                        for j in range(6) for k, m in enumerate(("valid/web/loss", "valid/wiki/loss"))])

    auto = extrapolate_steps(runs, 3600, StepFitConfig())
    old = extrapolate_steps(runs, 3600, StepFitConfig(alpha="per-metric", min_step=1))
    assert auto.choice.how == "held-out" and auto.choice.min_step >= 100
    assert {s["min_step"] for s in auto.choice.scores} == {20, 60, 120, 240}
    assert error(auto) < 0.005 < error(old)


def test_size_settings_choose_per_metric_exponents_when_the_sets_scale_differently():
    rng = np.random.default_rng(3)
    sizes = [1e6, 3e6, 1e7, 3e7, 1e8]
    tables = {}
    for n in sizes:
        tables[n] = pd.DataFrame([{"run_id": f"m{j}", "weight/web": w, "weight/code": 1 - w,
                                   "valid/web/loss": (2.0 + w + (1e6 / n) ** 0.15) * (1 + rng.normal(0, 5e-4)),
                                   "valid/code/loss": (1.5 - w + (1e6 / n) ** 0.9) * (1 + rng.normal(0, 5e-4))}
                                  for j, w in enumerate([0.2, 0.4, 0.6, 0.8])])
    res = extrapolate_size(tables, 1e9)
    assert res.choice.how == "held-out" and res.choice.alpha == "per-metric"
    errs = {s["alpha"]: s["error"] for s in res.choice.scores}
    assert errs["per-metric"] < errs["shared"]
    assert res.table.loc[0, "valid/code/loss"] == pytest.approx(1.3 + 1e-3 ** 0.9, rel=0.01)
