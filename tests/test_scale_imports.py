"""Curves made elsewhere: Megatron-LM TensorBoard event files (written by torch's SummaryWriter, read by
TensorBoard's own reader), long CSV/TSV exports with a mixtures file or weight columns, and the one rule for
the minimal run directory that `regmix validate`, `regmix collect` and `regmix scale fit` share."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.rundir import read_run
from regmix_plugin.collect.imported import canonical_metric

STEPS = list(range(10, 201, 10))


def _loss(step, e, x0=30.0, a=0.5):
    return e + (x0 / step) ** a


def _weights_record(path, weights):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"domains": [{"name": d, "weight": w} for d, w in weights.items()]}))


def _megatron_tb(run_dir, offsets: dict[str, float], steps=STEPS, purge_step=None, shift=0.0):
    """Event files as Megatron-LM writes them with --validation-set-names, plus a downstream tag."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)
    for s in steps:
        w.add_scalar("lm loss", _loss(s, 2.0) + 0.1, s)
        for name, e in offsets.items():
            v = _loss(s, e) + shift
            w.add_scalar(f"lm loss validation-{name}", v, s)
            w.add_scalar(f"lm loss validation-{name} vs samples", v, s * 32)  # x: consumed samples
            w.add_scalar(f"lm loss validation-{name} ppl", float(np.exp(v)), s)
        w.add_scalar("valid/arc_easy/bpb", _loss(s, 0.9, 50.0, 0.3), s)
    w.close()


def test_megatron_tags_map_onto_runs_table_names():
    assert canonical_metric("lm loss validation-wiki") == "valid/wiki/loss"
    assert canonical_metric("lm loss validation") == "valid/validation/loss"
    assert canonical_metric("lm loss validation-3") == "valid/3/loss"
    assert canonical_metric("mtp_1 loss validation-wiki") == "valid/wiki/mtp_1_loss"
    assert canonical_metric("lm loss") == "train/loss"
    assert canonical_metric("lm loss validation-wiki vs samples") is None
    assert canonical_metric("lm loss validation-wiki ppl") is None
    assert canonical_metric("lm loss validation-wiki ppl vs samples") is None
    assert canonical_metric("valid/arc_easy/bpb") == "valid/arc_easy/bpb"


def test_megatron_tensorboard_run_is_validated_collected_and_fitted(tmp_path, capsys):
    run = tmp_path / "runs" / "mt-a"
    _weights_record(run / "mixture.json", {"web": 0.7, "code": 0.3})
    _megatron_tb(run, {"web": 2.0, "wiki": 2.6})
    # A restart from step 100: TensorBoard's purge drops the first attempt's events past it.
    _megatron_tb(run, {"web": 2.0, "wiki": 2.6}, steps=range(110, 201, 10), purge_step=110, shift=-0.01)

    rec = read_run(run, [])
    assert rec.status == "imported"  # no status.json, outcome.json or config.yaml: not "running"
    assert rec.weights == {"web": 0.7, "code": 0.3}
    assert rec.evals[200]["valid/web/loss"] == pytest.approx(_loss(200, 2.0) - 0.01)  # the second attempt's
    assert sorted(rec.evals) == STEPS
    assert rec.evals[100]["valid/web/loss"] == pytest.approx(_loss(100, 2.0))
    assert set(rec.evals[50]) == {"valid/web/loss", "valid/wiki/loss", "valid/arc_easy/bpb"}
    assert rec.train[0][1] == pytest.approx(_loss(10, 2.0) + 0.1)

    assert main(["validate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ok, run directory (status imported): 2 training domains" in out
    assert "20 evals (steps 10..200) of 3 metrics from TensorBoard files" in out
    assert "2 on sets that are not training domains" in out  # wiki, arc_easy

    assert main(["collect", str(tmp_path / "runs"), "--out", str(tmp_path / "runs.csv")]) == 0
    table = pd.read_csv(tmp_path / "runs.csv")
    assert table.loc[0, "status"] == "imported" and table.loc[0, "step"] == 200
    assert table.loc[0, "valid/arc_easy/bpb"] == pytest.approx(_loss(200, 0.9, 50.0, 0.3), rel=1e-6)

    assert main(["scale", "fit", str(run), "--target", "800,1600", "--out", str(tmp_path / "fit")]) == 0
    out = capsys.readouterr().out
    assert "step law settings: alpha" in out
    for t in (800, 1600):
        ext = pd.read_csv(tmp_path / "fit" / f"extrapolated_step{t}.csv")
        assert ext.loc[0, "valid/wiki/loss"] == pytest.approx(_loss(t, 2.6), rel=0.02)
        assert ext.loc[0, "valid/arc_easy/bpb"] == pytest.approx(_loss(t, 0.9, 50.0, 0.3), rel=0.01)
    doc = json.loads((tmp_path / "fit" / "step_laws.json").read_text())
    assert doc["settings"]["how"] == "held-out" and doc["tables"] == {"800": "extrapolated_step800.csv",
                                                                      "1600": "extrapolated_step1600.csv"}


def _long_rows(run, e_web, e_news, weights=None):
    rows = []
    for s in STEPS:
        for metric, v in (("lm loss validation-web", _loss(s, e_web)), ("lm loss validation-news", _loss(s, e_news)),
                          ("lm loss validation-web ppl", 99.0)):
            row = {"run": run, "step": s, "metric": metric, "value": v, "tokens": s * 4096}
            row.update({f"weight/{d}": w for d, w in (weights or {}).items()})
            rows.append(row)
    return rows


def test_long_curve_files_with_weight_columns_or_a_mixtures_file(tmp_path, capsys):
    a = pd.DataFrame(_long_rows("r1", 2.0, 2.8, {"web": 0.25, "code": 0.75}) + _long_rows("r2", 2.2, 2.7, {"web": 0.5, "code": 0.5}))
    a.to_csv(tmp_path / "a.csv", index=False)
    b = pd.DataFrame(_long_rows("r3", 2.4, 2.6))
    b.to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    pd.DataFrame({"run": ["r3"], "web": [0.75], "code": [0.25]}).to_csv(tmp_path / "mix.csv", index=False)

    assert main(["collect", "--curves", str(tmp_path / "a.csv"), "--curves", str(tmp_path / "b.tsv"),
                 "--mixtures", str(tmp_path / "mix.csv"), "--out", str(tmp_path / "runs.csv")]) == 0
    t = pd.read_csv(tmp_path / "runs.csv").set_index("run_id")
    assert t.loc["r3", "weight/web"] == 0.75 and set(t["status"]) == {"imported"}
    assert t.loc["r2", "valid/news/loss"] == pytest.approx(_loss(200, 2.7))
    assert t.loc["r1", "tokens"] == 200 * 4096

    assert main(["scale", "fit", "--curves", str(tmp_path / "a.csv"), "--curves", str(tmp_path / "b.tsv"),
                 "--mixtures", str(tmp_path / "mix.csv"), "--target", "1000", "--axis", "tokens",
                 "--alpha", "shared", "--min-step", "20", "--out", str(tmp_path / "fit")]) == 0
    assert "step law settings: alpha shared, warm-up cut: evals from step 20 (as given)" in capsys.readouterr().out
    ext = pd.read_csv(tmp_path / "fit" / "extrapolated.csv").set_index("run_id")
    assert ext.loc["r3", "weight/code"] == 0.25 and ext.loc["r3", "tokens"] == 1000


@pytest.mark.parametrize("case, message", [
    ("no_metric", "--curves {tmp}/bad.csv: no 'metric' column; a long curve file has run, step, metric, value"),
    ("bad_value", "--curves {tmp}/bad.csv line 3, column value: 'n/a' is not a number"),
    ("weights_change", "--curves {tmp}/bad.csv, run 'r1', column weight/web: the weight changes between rows"),
    ("bad_mixtures", "--mixtures {tmp}/mix.csv line 2, column web: 'x' is not a weight"),
    ("no_mixture", "r1: no mixture (mixture.json, the mixture in config.yaml, weight/<domain> columns, or a row in --mixtures)"),
])
def test_bad_import_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    rows = pd.DataFrame(_long_rows("r1", 2.0, 2.8, None if case == "no_mixture" else {"web": 0.5, "code": 0.5}))
    if case == "no_metric":
        rows = rows.drop(columns=["metric"])
    if case == "bad_value":
        rows["value"] = rows["value"].astype(object)
        rows.loc[1, "value"] = "n/a"
    if case == "weights_change":
        rows.loc[4, "weight/web"] = 0.4
    rows.to_csv(tmp_path / "bad.csv", index=False)
    args = ["scale", "fit", "--curves", str(tmp_path / "bad.csv"), "--target", "500", "--out", str(tmp_path / "o")]
    if case == "bad_mixtures":
        pd.DataFrame({"run": ["r1"], "web": ["x"], "code": [0.5]}).to_csv(tmp_path / "mix.csv", index=False)
        args += ["--mixtures", str(tmp_path / "mix.csv")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_one_rule_for_the_minimal_run_directory(tmp_path, capsys):
    """A weights record (no prefixes) is accepted by validate, collect and scale alike; a bad one is refused by
    all three with the same field named."""
    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    for run, weights in ((good, {"web": 0.6, "code": 0.4}), (bad, {"web": -0.2, "code": 1.2})):
        _weights_record(run / "mixture.json", weights)
        with open(run / "metrics.jsonl", "w") as f:
            for s in STEPS:
                f.write(json.dumps({"step": s, "tokens": s * 64, "valid/web/loss": _loss(s, 2.0)}) + "\n")

    assert main(["validate", str(good / "mixture.json")]) == 0
    assert "ok as a run's mixture record, 2 domains" in capsys.readouterr().out
    assert main(["validate", str(good)]) == 0
    assert "status imported" in capsys.readouterr().out

    field = "domains[0].weight: -0.2 is negative; weights must be >= 0"
    for args in (["validate", str(bad / "mixture.json")], ["validate", str(bad)]):
        assert main(args) == 2
        assert field in capsys.readouterr().err
    assert main(["collect", str(tmp_path / "runs"), "--out", str(tmp_path / "runs.csv")]) == 0
    err = capsys.readouterr().err
    assert f"bad: {bad / 'mixture.json'}: {field}; its weights are left empty" in err
    assert main(["scale", "fit", str(bad), "--target", "400", "--out", str(tmp_path / "fit")]) == 2
    assert "bad: no mixture" in capsys.readouterr().err
    # A trainable mixture lacking prefixes on one domain only is a mixture, and must have them.
    (tmp_path / "half.json").write_text(json.dumps({"version": 1, "domains": [
        {"name": "web", "weight": 0.5, "prefixes": ["web/train"]}, {"name": "code", "weight": 0.5}]}))
    assert main(["validate", str(tmp_path / "half.json")]) == 2
    assert "domains[1].prefixes: missing" in capsys.readouterr().err
