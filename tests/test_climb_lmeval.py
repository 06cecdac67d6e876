"""CLIMB and lm-evaluation-harness in and out (issue 26): a CLIMB-layout folder written here (nK.sh scripts and
lm-eval results files in lm-evaluation-harness 0.4.x's documented layout) goes through collect -> fit (an accuracy,
maximised) -> optimize -> export --format climb, and the script reads back; bad input is one line, exit 2,
naming the file, with nothing written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.climb import read_lm_harness_csv
from regmix_plugin.export.climb import read_mixture_sh, render
from regmix_plugin.mixture import Mixture

DOMAINS = ["cluster_0", "cluster_1", "cluster_2", "cluster_3"]
BEST = np.array([0.1, 0.5, 0.3, 0.1])
TASKS = {"arc_easy": ("acc", "acc_norm"), "piqa": ("acc", "acc_norm"), "hellaswag": ("acc", "acc_norm")}


def results_doc(score: float, tasks=TASKS) -> dict:
    """An lm-eval results file as EvaluationTracker.save_results_aggregated writes it (0.4.x)."""
    res = {}
    for t, metrics in tasks.items():
        res[t] = {"alias": t}
        for m in metrics:
            res[t][f"{m},none"] = score
            res[t][f"{m}_stderr,none"] = 0.01
    return {"results": res, "groups": {}, "group_subtasks": {t: [] for t in tasks},
            "configs": {t: {"task": t} for t in tasks}, "versions": {t: 1.0 for t in tasks},
            "n-shot": {t: 0 for t in tasks}, "higher_is_better": {t: {m: True for m in ms} for t, ms in tasks.items()},
            "n-samples": {t: {"original": 100, "effective": 100} for t in tasks},
            "config": {"model": "megatron_lm", "batch_size": "auto"}, "git_hash": "abc1234", "date": 1.7e9,
            "task_hashes": {}, "model_source": "megatron_lm", "model_name": "", "model_name_sanitized": "",
            "start_time": 1.0, "end_time": 2.0, "total_evaluation_time_seconds": "1.0"}


def write_climb_folder(root: Path, n: int = 24, seed: int = 0, round_k: int = 1) -> Path:
    """CLIMB's e2e.sh layout: mixtures_K/n<i>.sh (5_mixture.py's text) and lm_eval_results_K/n<i>/<model>/results_*.json."""
    rng = np.random.default_rng(seed)
    dom_dir = root / "domains"
    mix_dir, res_dir = root / f"mixtures_{round_k}", root / f"lm_eval_results_{round_k}"
    mix_dir.mkdir(parents=True)
    for i in range(1, n + 1):
        w = np.round(rng.dirichlet(np.ones(len(DOMAINS))), 5)
        lines = ["#!/bin/bash", "cat <<EOF"] + [f"{x} {dom_dir / d}" for x, d in zip(w, DOMAINS) if x > 0] + ["EOF"]
        (mix_dir / f"n{i}.sh").write_text("\n".join(lines) + "\n")
        acc = 0.6 - 0.5 * float(((w - BEST) ** 2).sum())
        out = res_dir / f"n{i}" / "__ckpt__n1"
        out.mkdir(parents=True)
        (out / "results_2026-01-02T10-00-00.000001.json").write_text(json.dumps(results_doc(acc)))
        (out / "results_2026-01-01T10-00-00.000001.json").write_text(json.dumps(results_doc(0.0)))  # older: ignored
    return root


def test_climb_folder_to_runs_table_fit_optimize_export_and_back(tmp_path, capsys):
    root = write_climb_folder(tmp_path / "climb")
    runs = tmp_path / "runs.csv"
    assert main(["collect", "--climb", str(root), "--out", str(runs)]) == 0
    df = pd.read_csv(runs)
    assert len(df) == 24 and df["run_id"].iloc[0] == "r1_n1" and set(df["round"]) == {1}
    assert [f"weight/{d}" for d in DOMAINS] == [c for c in df.columns if c.startswith("weight/")]
    assert {"lmeval/arc_easy/acc", "lmeval/arc_easy/acc_stderr", "lmeval/piqa/acc_norm", "valid_avg"} <= set(df.columns)
    assert df["lmeval/arc_easy/acc"].min() > 0.2  # the newest results file won, not the older zeros
    manual = 100 * df[["lmeval/arc_easy/acc", "lmeval/piqa/acc_norm", "lmeval/hellaswag/acc_norm"]].mean(axis=1)
    assert np.allclose(df["valid_avg"], manual)

    # The same runs through --lm-eval with the round's mixture scripts.
    assert main(["collect", "--lm-eval", str(root / "lm_eval_results_1"), "--climb-mixtures", str(root / "mixtures_1"),
                 "--out", str(tmp_path / "r2.csv")]) == 0
    df2 = pd.read_csv(tmp_path / "r2.csv")
    assert df2["run_id"].tolist() == [f"n{i}" for i in range(1, 25)]
    assert np.allclose(df2["valid_avg"], df["valid_avg"])

    capsys.readouterr()
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs), "--target", "valid_avg", "--folds", "4", "--quiet",
                 "--params", '{"candidates": ["lightgbm", "mixing-law", "eff-law"]}', "--out", str(model)]) == 0
    assert "direction: maximize (higher is better; default from the metric name 'valid_avg'" in capsys.readouterr().out
    assert main(["optimize", "--model", str(model), "--samples", "4000", "--top-k", "32",
                 "--out", str(tmp_path / "regmix.json")]) == 0
    mix = Mixture.load(tmp_path / "regmix.json")
    w = np.array([mix.weight_of(d) for d in DOMAINS])
    assert np.abs(w - BEST).max() < 0.15, w

    out = root / "optimal_mixture" / "n1.sh"
    assert main(["export", str(tmp_path / "regmix.json"), "--format", "climb", "--base-dir", str(root / "domains"),
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("#!/bin/bash\ncat <<EOF\n") and text.endswith("\nEOF\n")
    back = read_mixture_sh(out)
    assert back.prefixes == {d: str(root / "domains" / d) for d in DOMAINS if mix.weight_of(d) > 0}
    assert np.allclose([back.weights.get(d, 0.0) for d in DOMAINS], w, atol=1e-9)
    # What CLIMB's 6_train.sh does with it: run it, split its output into words, pass them as --train-data-path.
    words = subprocess.run(["bash", str(out)], capture_output=True, text=True, check=True).stdout.split()
    assert words[1::2] == [str(root / "domains" / d) for d in DOMAINS if mix.weight_of(d) > 0]
    assert np.isclose(sum(map(float, words[0::2])), 1.0)


def test_several_rounds_and_lm_harness_csv(tmp_path):
    root = write_climb_folder(tmp_path / "climb", n=6, seed=1, round_k=1)
    write_climb_folder(root, n=5, seed=2, round_k=2)
    assert main(["collect", "--climb", str(root), "--out", str(tmp_path / "runs.csv")]) == 0
    df = pd.read_csv(tmp_path / "runs.csv")
    assert df.groupby("round").size().to_dict() == {1: 6, 2: 5}
    assert df["run_id"].iloc[6] == "r2_n1"

    # CLIMB's own table (8_predict.py's columns): domains besides its four metric columns.
    rows = [{"model_benchmark_path": f"{root}/lm_eval_results_1/n{i}", "arc_easy_acc": 50.0 + i,
             "piqa_acc_norm": 60.0, "hellaswag_acc_norm": 30.0, "valid_avg": 45.0 + i / 3,
             **dict(zip(DOMAINS, [0.25, 0.25, 0.25, 0.25]))} for i in range(1, 4)]
    pd.DataFrame(rows).to_csv(tmp_path / "lm_harness_results.csv", index=False)
    t = read_lm_harness_csv(tmp_path / "lm_harness_results.csv")
    assert t["run_id"].tolist() == ["n1", "n2", "n3"]
    assert [c for c in t.columns if c.startswith("weight/")] == [f"weight/{d}" for d in DOMAINS]
    assert "valid_avg" in t.columns and "arc_easy_acc" in t.columns
    assert main(["collect", "--climb-csv", str(tmp_path / "lm_harness_results.csv"), "--out", str(tmp_path / "c.csv")]) == 0


def test_export_several_mixtures_to_a_folder(tmp_path):
    doms = [{"name": d, "weight": w, "prefixes": [f"/data/{d}"]} for d, w in zip(DOMAINS, BEST)]
    for k in (1, 2):
        (tmp_path / f"n{k}.json").write_text(json.dumps({"version": 1, "name": f"n{k}", "domains": doms}))
    assert main(["export", str(tmp_path / "n1.json"), str(tmp_path / "n2.json"), "--format", "climb",
                 "--out-dir", str(tmp_path / "mixtures_2")]) == 0
    assert read_mixture_sh(tmp_path / "mixtures_2" / "n2.sh").weights == dict(zip(DOMAINS, BEST.tolist()))
    assert render([(0.5, "/a/x"), (0.0, "/a/y"), (0.5, "/a/z")]) == "#!/bin/bash\ncat <<EOF\n0.5 /a/x\n0.5 /a/z\nEOF\n"


@pytest.mark.parametrize("case", ["sh_without_weights", "weight_not_a_number", "results_without_results",
                                  "task_missing", "no_mixture_for_run"])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    root = write_climb_folder(tmp_path / "climb", n=4)
    if case == "sh_without_weights":
        bad = root / "mixtures_1" / "n2.sh"
        bad.write_text("#!/bin/bash\ncat <<EOF\nEOF\n")
    elif case == "weight_not_a_number":
        bad = root / "mixtures_1" / "n3.sh"
        bad.write_text(f"#!/bin/bash\ncat <<EOF\nabc {root}/domains/cluster_0\nEOF\n")
    elif case == "results_without_results":
        bad = next((root / "lm_eval_results_1" / "n2").rglob("results_2026-01-02*.json"))
        bad.write_text(json.dumps({"config": {}}))
    elif case == "task_missing":
        bad = next((root / "lm_eval_results_1" / "n3").rglob("results_2026-01-02*.json"))
        bad.write_text(json.dumps(results_doc(0.5, {k: v for k, v in TASKS.items() if k != "piqa"})))
    else:
        bad = root / "mixtures_1" / "n4.sh"
        bad.unlink()
        bad = root / "lm_eval_results_1"
    out = tmp_path / "runs.csv"
    assert main(["collect", "--climb", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err, err
    assert not out.exists() and not (tmp_path / "runs.warnings.txt").exists()
