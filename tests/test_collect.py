"""`regmix collect`: run directories, the common step, RegMix/Olmix imports, and reported (not fixed) problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.runs_table import collect, from_olmix_csv
from regmix_plugin.table import read_runs

REGMIX_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix-pile-1m"


def make_run(root: Path, run_id: str, weights: dict, evals: dict, state: str = "completed", train=None) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    doc = {"version": 1, "name": run_id,
           "domains": [{"name": n, "weight": w, "prefixes": [f"{n}/train"]} for n, w in weights.items()]}
    (d / "mixture.json").write_text(json.dumps(doc))
    (d / "status.json").write_text(json.dumps({"run_id": run_id, "state": state, "attempts": []}))
    lines = []
    for step, losses in evals.items():
        lines.append({"step": step, "tokens": step * 100, "train/loss": (train or {}).get(step, 5.0 - step / 100)})
        lines.append({"step": step, "tokens": step * 100, **{f"valid/{k}/loss": v for k, v in losses.items()}})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def test_run_dirs_become_one_row_each_at_the_last_common_step(tmp_path):
    runs = tmp_path / "out" / "runs"
    make_run(runs, "n0001", {"a": 0.25, "b": 0.75}, {10: {"a": 3.0, "b": 4.0}, 20: {"a": 2.5, "b": 3.5}})
    make_run(runs, "n0002", {"a": 0.5, "b": 0.5}, {10: {"a": 2.9, "b": 4.1}, 20: {"a": 2.4, "b": 3.6},
                                                  30: {"a": 2.0, "b": 3.0}})
    make_run(runs, "n0003", {"a": 1.0, "b": 0.0}, {10: {"a": 9.0, "b": 9.0}}, state="failed")
    with open(runs / "n0002" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "train/lo')  # cut mid-write by a crash

    df, warnings = collect([tmp_path / "out"])
    assert list(df.columns) == ["run_id", "status", "weight/a", "weight/b", "step", "tokens", "train/loss",
                                "valid/a/loss", "valid/b/loss"]
    row = df.set_index("run_id")
    # Step 20 is the last step both completed runs evaluated; the failed run, which never got there, has no losses.
    assert row.loc["n0001", "step"] == 20 and row.loc["n0002", "step"] == 20
    assert row.loc["n0002", "valid/a/loss"] == 2.4 and row.loc["n0002", "train/loss"] == pytest.approx(4.8)
    assert row.loc["n0002", "tokens"] == 2000 and row.loc["n0003", "status"] == "failed"
    assert np.isnan(row.loc["n0003", "valid/a/loss"]) and row.loc["n0003", "weight/a"] == 1.0
    assert warnings == ["n0002: 1 unreadable line(s) in metrics.jsonl skipped (a run cut mid-write?)"]

    df30, w30 = collect([runs / "n0001", runs / "n0002"], step=30)
    assert df30.set_index("run_id").loc["n0002", "valid/b/loss"] == 3.0
    assert np.isnan(df30.set_index("run_id").loc["n0001", "valid/b/loss"])
    assert any("n0001: no evaluation at step 30" in w for w in w30)


def test_problems_are_reported_beside_the_table_not_fixed(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "r1", {"a": 0.5, "b": 0.5}, {10: {"a": 1.0, "b": 2.0}})
    make_run(runs, "r2", {"a": 0.5, "b": 0.5}, {10: {"a": 1.1, "b": 2.1}})  # same mixture as r1
    make_run(runs, "r3", {"a": 0.6, "c": 0.4}, {10: {"a": 1.0, "c": 2.0}})  # no domain b
    make_run(runs, "r4", {"a": 0.7, "b": 0.5}, {10: {"a": 1.0, "b": 2.0}})  # sums to 1.2
    out = tmp_path / "runs.csv"
    assert main(["collect", str(runs), "--out", str(out)]) == 0
    text = (tmp_path / "runs.warnings.txt").read_text()
    assert "r3: no weight for domain(s) b; left empty, not set to 0" in text
    assert "r1: no weight for domain(s) c;" in text  # r3 brought domain c, which the others lack
    assert "r4: weights sum to 1.2, not 1" in text
    assert "r1, r2: identical mixtures (duplicate runs)" in text
    assert "regmix collect: warning: r4: weights sum to 1.2" in capsys.readouterr().err
    df = read_runs(out)
    assert df.set_index("run_id").loc["r4", "weight/a"] == 0.7  # left as it is
    assert np.isnan(df.set_index("run_id").loc["r3", "weight/b"])

    # Parquet works too, and the same run collected twice is a duplicate run id.
    assert main(["collect", str(runs), str(runs / "r1"), "--out", str(tmp_path / "runs.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == 5
    assert "r1: run id appears 2 times" in (tmp_path / "runs.warnings.txt").read_text()


def test_olmix_ratios_and_metrics_pair_imports_into_the_runs_table(tmp_path):
    # Olmix's documented input: `run` (or `run_id`) joins the files, optional `name`, one column per domain
    # in ratios.csv and one per metric in metrics.csv.
    (tmp_path / "swarm_ratios.csv").write_text(
        "run,name,dclm,wikipedia,arxiv\nrun_001,a,0.45,0.30,0.25\nrun_002,b,0.60,0.20,0.20\n"
        "run_003,c,0.33,0.33,0.33\nrun_004,d,0.5,0.5,0.5\n")
    (tmp_path / "swarm_metrics.csv").write_text(
        "run,arc_challenge_bpb,hellaswag_bpb\nrun_001,1.23,0.87\nrun_002,1.15,0.91\nrun_003,1.20,0.89\n")
    warnings: list[str] = []
    df = from_olmix_csv(tmp_path / "swarm_ratios.csv", tmp_path / "swarm_metrics.csv", warnings)
    assert list(df.columns[:5]) == ["run_id", "status", "name", "weight/dclm", "weight/wikipedia"]
    assert df.set_index("run_id").loc["run_002", "hellaswag_bpb"] == 0.91
    assert any("run_004" in w for w in warnings)  # ratios without metrics are reported

    out = tmp_path / "olmix.csv"
    assert main(["collect", "--olmix", str(tmp_path / "swarm_ratios.csv"), str(tmp_path / "swarm_metrics.csv"),
                 "--out", str(out)]) == 0
    text = (tmp_path / "olmix.warnings.txt").read_text()
    assert "run_003: weights sum to 0.99" not in text  # 2 decimals x 3 domains: within rounding
    assert "run_004: weights sum to 1.5, not 1" in text
    assert read_runs(out)["weight/arxiv"].tolist() == [0.25, 0.20, 0.33, 0.5]


@pytest.mark.skipif(not REGMIX_DATA.is_dir(), reason="../shared/data/regmix-pile-1m not present")
def test_regmix_released_pair_imports_without_spurious_warnings(tmp_path):
    df, warnings = collect(regmix=[(str(REGMIX_DATA / "test_mixture_1m.csv"), str(REGMIX_DATA / "test_pile_loss_1m.csv"))])
    assert len(df) == 256 and len([c for c in df.columns if c.startswith("weight/")]) == 17
    assert "valid/pile_cc/loss" in df.columns and (df["status"] == "imported").all()
    assert warnings == []  # 3-decimal weights over 17 domains sum to 1 within rounding
