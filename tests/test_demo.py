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
from regmix_plugin.demo.report import _verdict
from regmix_plugin.demo.run import TARGET
from regmix_plugin.demo.sources import DEMO_SOURCES, available_sources
from regmix_plugin.errors import ConfigError


def test_sources_are_capped_deterministic_and_real():
    found = available_sources(log=lambda m: None)
    if not found:
        pytest.skip("no demo text sources installed (run scripts/install_system_packages.sh)")
    for src in found:
        docs = src.read()
        assert docs, f"{src.domain}: no documents"
        assert sum(len(d.encode()) for d in docs) <= src.max_bytes
        assert all(len(d) >= 20 for d in docs)
        assert docs[:5] == src.read()[:5], f"{src.domain}: document order is not deterministic"


def test_missing_sources_are_skipped_with_a_message(monkeypatch):
    messages = []
    gone = DEMO_SOURCES[0]
    monkeypatch.setattr(type(gone), "available", lambda self: self.domain != gone.domain)
    got = available_sources(log=messages.append)
    assert gone.domain not in [s.domain for s in got]
    assert any(gone.domain in m and "skipping" in m for m in messages)


def _summary(losses: dict[str, list[float]]) -> pd.DataFrame:
    rows = {k: {TARGET: float(np.mean(v)), f"{TARGET} (std)": float(np.std(v, ddof=1)), "seeds": len(v)}
            for k, v in losses.items()}
    return pd.DataFrame(rows).T


def test_verdict_says_plainly_who_won_and_whether_it_beats_noise():
    text, facts = _verdict(_summary({"regmix": [3.0, 3.01], "natural": [3.2, 3.21], "uniform": [3.1, 3.12]}), TARGET)
    assert text.startswith("**The RegMix mixture won.**") and "larger than" in text
    assert facts["best_baseline"] == "uniform" and facts["gap"] == pytest.approx(0.105)

    text, _ = _verdict(_summary({"regmix": [3.0, 3.2], "natural": [3.11, 3.11]}), TARGET)
    assert "won" in text and "within seed noise" in text

    text, facts = _verdict(_summary({"regmix": [3.3, 3.31], "natural": [3.2, 3.21]}), TARGET)
    assert text.startswith("**The RegMix mixture did not win.**") and facts["gap"] < 0
    assert "more than the largest seed std" in text

    text, _ = _verdict(_summary({"regmix": [3.20, 3.22], "natural": [3.19, 3.21]}), TARGET)
    assert text.startswith("**The RegMix mixture did not win.**") and "within seed noise" in text and "a tie" in text


def test_config_rejects_bad_values_with_the_flag_name(tmp_path):
    with pytest.raises(ConfigError, match="--proxies"):
        DemoConfig(out=tmp_path, proxies=2)
    with pytest.raises(ConfigError, match="--target-config"):
        DemoConfig(out=tmp_path, target_config=tmp_path / "nope.yaml")


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
           "--proxies", "8", "--heldout", "3", "--target-seeds", "1", "--predictor", "linear",
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
    assert {r["metric"] for r in check["rows"]} >= {TARGET, "valid/quotes/loss", "valid/code/loss"}
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
