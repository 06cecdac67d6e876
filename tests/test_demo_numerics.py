"""The demo's runs compute the same bits whatever instruction set the CPU offers (docs/DECISIONS.md 65).

Issue 25: a fresh clone on another machine gave other RegMix target losses, and flipped a verdict, while the
fixed mixtures' losses agreed. The cause was torch choosing its CPU kernels by instruction set (AVX512 here,
AVX2 elsewhere); the small proxies amplified their last-digit differences into a different mixture. A second
CPU cannot exist in a test, so it is stood in for the way the libraries themselves allow: the environment
variables that make ATen, oneDNN and MKL dispatch as on an older CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from regmix_plugin.demo.config import DemoConfig
from regmix_plugin.demo.numerics import PINNED_ISA, cpu_flags, pinned_isa_env
from regmix_plugin.demo.run import Demo
from regmix_plugin.mixture import Mixture
from data_helpers import make_tiny_corpus
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG

# What another machine looks like to the libraries: no AVX2 kernels in ATen, SSE4.1 in oneDNN, MKL's generic path.
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}


def test_the_pin_is_set_only_where_the_cpu_has_avx2_and_fma(tmp_path):
    assert pinned_isa_env(frozenset({"sse4_2", "avx", "avx2", "fma"}), "x86_64") == PINNED_ISA
    assert pinned_isa_env(frozenset({"sse4_2", "avx", "fma"}), "x86_64") == {}  # ATen would run AVX2 code anyway
    assert pinned_isa_env(frozenset({"avx2", "fma"}), "aarch64") == {}
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "fma"} and cpu_flags(tmp_path / "missing") == frozenset()


def _final_losses(run_dir: Path) -> dict[str, float]:
    last = json.loads((run_dir / "metrics.jsonl").read_text().strip().splitlines()[-1])
    return {k: v for k, v in last.items() if k.startswith(("valid/", "train/"))}


def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ISA}  # this machine as it is
    return {**env, **over}


@pytest.mark.slow  # three tiny runs, each a fresh torch process: ~25 CPU-s
@pytest.mark.skipif(not pinned_isa_env(), reason="not an x86-64 CPU with AVX2 and FMA: the demo sets no pin here")
def test_demo_runs_give_the_same_bits_on_another_instruction_set(tmp_path):
    out = tmp_path / "demo"
    _, natural = make_tiny_corpus(out, domains=2, name="corpus")  # where the demo keeps its corpus
    demo = Demo(DemoConfig(out=out, workers=1), log=lambda *a, **k: None)
    mixtures = tmp_path / "mixtures"
    Mixture.load(natural).rebased(mixtures).save(mixtures / "natural.json")
    extra = tuple(a for o in TEST_OVERRIDES + ["train.steps=8", "eval.every=0"] for a in ("--set", o))

    runs = {}
    for machine, env in {"this CPU": _env(), "another CPU": _env(**OTHER_CPU)}.items():
        # The demo's own study (its env, its trainer command), run by `regmix sweep` as the demo runs it:
        # forked from a process that imported torch after applying the study's env.
        study = demo._study(machine.replace(" ", "-"), mixtures, TINY_CONFIG, tmp_path / machine, extra=extra)
        proc = subprocess.run([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress"],
                              capture_output=True, text=True, timeout=300, env=env, cwd=out)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        runs[machine] = tmp_path / machine / "runs" / "natural"
        assert yaml.safe_load((runs[machine] / "config.yaml").read_text())["run"]["cpu_capability"] == "AVX2"
    assert _final_losses(runs["this CPU"]) == _final_losses(runs["another CPU"])  # bit for bit

    # The control: the same run without the demo's pin, on "another CPU", computes other bits. Were it equal,
    # the comparison above could not have failed and would prove nothing.
    bare = tmp_path / "unpinned"
    cfg = yaml.safe_load(Path(demo.path("study-this-CPU.yaml")).read_text())
    proc = subprocess.run([sys.executable, "-m", "regmix_plugin", "train", "--mixture", str(runs["this CPU"] / "mixture.json"),
                           "--config", str(TINY_CONFIG), "--run-dir", str(bare), *extra],
                          capture_output=True, text=True, timeout=300, env=_env(OMP_NUM_THREADS="1", **OTHER_CPU))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cfg["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert yaml.safe_load((bare / "config.yaml").read_text())["run"]["cpu_capability"] == "DEFAULT"
    assert _final_losses(bare) != _final_losses(runs["this CPU"])
