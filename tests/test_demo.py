"""The demo: its text sources, its verdict logic, and (slow) the whole loop at toy size on real text."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix_plugin.demo.config import CONFIG_DIR, DemoConfig
from regmix_plugin.demo.report import _verdict, paired_differences
from regmix_plugin.demo.run import TARGET, summarize_targets, with_target
from regmix_plugin.demo.sources import DEMO_SOURCES, EVAL_SOURCES, available_sources
from regmix_plugin.errors import ConfigError, RegmixError


@pytest.mark.parametrize("sources", [DEMO_SOURCES, EVAL_SOURCES], ids=["training", "evaluation"])
def test_sources_are_capped_deterministic_and_real(sources):
    found = available_sources(log=lambda m: None, sources=sources)
    if not found:
        pytest.skip("no demo text sources installed (run scripts/install_system_packages.sh)")
    for src in found:
        docs = src.read()
        assert docs, f"{src.domain}: no documents"
        assert sum(len(d.encode()) for d in docs) <= src.max_bytes
        assert all(len(d) >= 20 for d in docs)
        assert docs[:5] == src.read()[:5], f"{src.domain}: document order is not deterministic"


def test_evaluation_sets_are_not_training_domains():
    # DECISIONS 49: no evaluation set may share a name or a file with a training domain.
    assert not {s.domain for s in EVAL_SOURCES} & {s.domain for s in DEMO_SOURCES}
    assert all(s.domain.startswith("eval_") for s in EVAL_SOURCES)  # how mean(valid/eval_*/loss) finds them
    train_files = {f for s in DEMO_SOURCES for f in s.files()}
    assert not train_files & {f for s in EVAL_SOURCES for f in s.files()}


def test_missing_sources_are_skipped_with_a_message(monkeypatch):
    messages = []
    gone = DEMO_SOURCES[0]
    monkeypatch.setattr(type(gone), "available", lambda self: self.domain != gone.domain)
    got = available_sources(log=messages.append)
    assert gone.domain not in [s.domain for s in got]
    assert any(gone.domain in m and "skipping" in m for m in messages)


def _runs(losses: dict[str, list[float]]) -> pd.DataFrame:
    """One row per (mixture, seed), as target_table gives them: seed i of every mixture is one pair."""
    return pd.DataFrame([{"mixture": m, "seed": i + 1, TARGET: v, "status": "completed"}
                         for m, vals in losses.items() for i, v in enumerate(vals)])


def _judge(losses: dict[str, list[float]]):
    df = _runs(losses)
    return _verdict(summarize_targets(df, TARGET), paired_differences(df, TARGET), TARGET)


def test_paired_differences_are_per_seed_and_tested():
    df = _runs({"regmix": [3.00, 3.10, 3.20], "natural": [3.02, 3.13, 3.21], "uniform": [3.0, 3.0, 3.3]})
    p = paired_differences(df, TARGET)
    # natural - regmix per seed: 0.02, 0.03, 0.01 -> mean 0.02, std 0.01, t = 0.02 / (0.01 / sqrt 3) = 3.46
    assert p.loc["natural", "gain"] == pytest.approx(0.02) and p.loc["natural", "gain std"] == pytest.approx(0.01)
    assert p.loc["natural", "t"] == pytest.approx(2 * 3 ** 0.5) and p.loc["natural", "RegMix better on"] == 3
    from scipy.stats import ttest_rel

    assert p.loc["natural", "p"] == pytest.approx(ttest_rel([3.02, 3.13, 3.21], [3.00, 3.10, 3.20]).pvalue)
    assert p.loc["uniform", "RegMix better on"] == 1 and p.loc["uniform", "seeds"] == 3


def test_verdict_says_plainly_who_won_and_whether_it_beats_noise():
    # A consistent gain over every baseline: significant on 3 seeds.
    text, facts = _judge({"regmix": [3.0, 3.1, 3.2], "natural": [3.2, 3.31, 3.41], "uniform": [3.1, 3.21, 3.3]})
    assert text.startswith("**The RegMix mixture won, beyond seed noise.**") and facts["won_beyond_noise"]
    assert facts["best_baseline"] == "uniform" and facts["gap"] == pytest.approx(0.1033, abs=1e-4)
    assert "paired t-test over 3 seeds" in text and "little power" in text

    # Lowest mean, but one seed goes the other way: not beyond noise, and the verdict says against whom.
    text, facts = _judge({"regmix": [3.0, 3.1, 3.2], "natural": [3.05, 3.05, 3.3]})
    assert text.startswith("**The RegMix mixture has the lowest loss, but not beyond seed noise against natural.**")
    assert not facts["won_beyond_noise"] and "better on 2 of 3 seeds" in text

    # Beyond noise against one baseline, within it against another: both said.
    text, _ = _judge({"regmix": [3.0, 3.1, 3.2], "natural": [3.2, 3.31, 3.41], "uniform": [3.05, 3.05, 3.3]})
    assert text.startswith("**The RegMix mixture has the lowest loss: beyond seed noise against natural, "
                           "within it against uniform.**")

    # Worse on every seed by a steady margin: a real loss, said so.
    text, facts = _judge({"regmix": [3.3, 3.4, 3.5], "natural": [3.2, 3.31, 3.39]})
    assert text.startswith("**The RegMix mixture did not win.**") and facts["gap"] < 0
    assert "worse than natural beyond seed noise" in text

    text, _ = _judge({"regmix": [3.20, 3.22, 3.19], "natural": [3.19, 3.23, 3.18]})
    assert text.startswith("**The RegMix mixture did not win.**") and "a tie" in text

    # Two seeds: no test is trusted.
    text, facts = _judge({"regmix": [3.0, 3.1], "natural": [3.2, 3.3]})
    assert not facts["won_beyond_noise"] and "no usable test" in text


def test_the_target_column_comes_from_the_evaluation_sets_or_the_training_domains():
    df = pd.DataFrame({"weight/a": [0.5, 1.0], "weight/b": [0.5, 0.0], "valid/a/loss": [1.0, 2.0],
                       "valid/b/loss": [3.0, 4.0], "valid/eval_x/loss": [5.0, 7.0], "valid/eval_y/loss": [6.0, 8.0]})
    assert with_target(df.copy(), "eval")["target/eval_loss"].tolist() == [5.5, 7.5]
    assert with_target(df.copy(), "train-mean")["target/mean_valid_loss"].tolist() == [2.0, 3.0]
    with pytest.raises(RegmixError, match="valid/eval_\\*/loss"):
        with_target(df.drop(columns=["valid/eval_x/loss", "valid/eval_y/loss"]), "eval")


def test_config_rejects_bad_values_with_the_flag_name(tmp_path):
    with pytest.raises(ConfigError, match="--proxies"):
        DemoConfig(out=tmp_path, proxies=2)
    with pytest.raises(ConfigError, match="--target-config"):
        DemoConfig(out=tmp_path, target_config=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="--target: unknown value 'loss'; choose one of eval, train-mean"):
        DemoConfig(out=tmp_path, target="loss")
    with pytest.raises(ConfigError, match="--target-seeds: .* repeats a seed"):
        DemoConfig(out=tmp_path, target_seeds=[1, 1, 2])
    assert DemoConfig(out=tmp_path).target_seeds == [1, 2, 3, 4, 5]  # a paired test needs at least 3 (DECISIONS 66)


@pytest.mark.slow
def test_demo_end_to_end_at_toy_size(tmp_path):
    """The whole loop on two real-text domains with 10-step models: every stage's output exists and is sane."""
    if len(available_sources(["quotes", "code"], log=lambda m: None)) < 2:
        pytest.skip("needs the fortunes package and the Python stdlib")
    proxy = yaml.safe_load((CONFIG_DIR / "demo-proxy-cpu.yaml").read_text())
    proxy["train"]["steps"], proxy["eval"]["every"], proxy["eval"]["samples_per_domain"] = 8, 8, 8
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(proxy))
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "regmix_plugin", "demo", "--out", str(out), "--domains", "quotes,code",
           "--proxies", "8", "--heldout", "3", "--target-seeds", "1,2", "--predictor", "linear",
           "--proxy-config", str(tmp_path / "toy.yaml"), "--target-config", str(tmp_path / "toy.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "$ regmix sweep" in proc.stdout and "report:" in proc.stdout

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and (runs["status"] == "completed").all()
    facts = json.loads((out / "report" / "demo.json").read_text())
    assert facts["best_baseline"] in {"natural", "uniform", "best-proxy"}
    assert np.isfinite(facts["regmix"])
    md = (out / "report" / "demo.md").read_text()
    assert "RegMix mixture" in md and "--data-mixture-from" in md
    assert (out / "report" / "target_loss.png").stat().st_size > 1000
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"text", "corpus", "synthesize", "sweep", "collect", "fit", "optimize", "target",
                            "rank_check", "report"}
    # The held-out mixtures ran at both scales and were compared.
    check = json.loads((out / "rank_check.json").read_text())
    assert {r["metric"] for r in check["rows"]} >= {TARGET, "valid/quotes/loss", "valid/code/loss",
                                                    "valid/eval_devil/loss"}
    # The target is the evaluation sets, which every run scores and none trains on.
    assert TARGET == "target/eval_loss" and (runs[TARGET] > 0).all() and "valid/eval_licenses/loss" in runs
    assert not any(c.startswith("weight/eval_") for c in runs.columns)
    assert "## RegMix against each baseline, seed by seed" in md and set(facts["paired"]) == {
        "natural", "uniform", "best-proxy"}
    assert all(r["n"] == 3 for r in check["rows"])
    assert facts["rank_check_mixtures"] == 3 and "## Do the proxies rank mixtures as the target model does?" in md
    assert re.search(r"^\| code \| -?\d\.\d\d \| 3 \|$", md, re.M)  # the count of mixtures prints as an integer
    assert "| sweep |" in md  # the stage-time table is filled
    # The four evaluated mixtures were also trained at proxy scale, one run each, and compared.
    assert len(pd.read_csv(out / "proxy_eval_runs.csv")) == 4
    assert "The four evaluated mixtures at both scales" in md and facts["best_at_proxy_scale"] in {
        "regmix", "natural", "uniform", "best-proxy"}

    # A rerun reuses the corpus and the finished runs.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["corpus"]["note"] == "reused" and timings["synthesize"]["note"] == "reused"
