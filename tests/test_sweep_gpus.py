"""The local backend on a machine with GPUs: each run gets its own through CUDA_VISIBLE_DEVICES.

There is no GPU here, so the GPUs are what the sweep is told it sees (the study's CUDA_VISIBLE_DEVICES, or a
stand-in `nvidia-smi` on PATH); what is checked is the environment each run's command really receives, read
back from inside the run, and how many runs held a GPU at once.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.sweep.local import DeviceSlots, visible_gpus
from sweep_helpers import write_study

# A run command that records the devices it was given and when it held them, then trains like the toy trainer.
GPU_PROBE = """
import json, os, subprocess, sys, time
run_dir = sys.argv[2]
os.makedirs(run_dir, exist_ok=True)
start = time.time()
time.sleep(float(os.environ.get("PROBE_SLEEP", "0.3")))
json.dump({"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()},
          open(os.path.join(run_dir, "gpu.json"), "w"))
sys.exit(subprocess.call([sys.executable, "toy_trainer.py", *sys.argv[1:]]))
"""


def _gpu_study(tmp_path: Path, n: int, local: dict, env: dict | None = None) -> Path:
    study = write_study(tmp_path, n=n, heldout=0, local=local, env=env or {},
                        command="{python} gpu_probe.py {mixture} {run_dir}")
    (tmp_path / "gpu_probe.py").write_text(GPU_PROBE)
    return study


def _probes(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/gpu.json")}


def _most_at_once(probes: dict[str, dict], devices: str) -> int:
    spans = [(p["start"], p["end"]) for p in probes.values() if p["devices"] == devices]
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


def test_runs_are_spread_over_the_gpus_the_study_sees(tmp_path):
    study = _gpu_study(tmp_path, 8, {"max_concurrent": 8, "runs_per_gpu": 2}, env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert main(["sweep", str(study), "--no-progress"]) == 0
    probes = _probes(tmp_path / "out")
    assert len(probes) == 8
    # Each run saw one GPU of the four, each GPU ran two runs, never more than two at once.
    assert sorted(p["devices"] for p in probes.values()) == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert all(_most_at_once(probes, g) <= 2 for g in "0123")


def test_a_run_takes_gpus_per_run_gpus_and_runs_per_gpu_caps_the_sweep(tmp_path, capsys):
    study = _gpu_study(tmp_path, 4, {"max_concurrent": 8, "gpus_per_run": 2, "gpus": [4, 5, "GPU-aa", "GPU-bb"]})
    assert main(["sweep", str(study), "--no-progress"]) == 0
    probes = _probes(tmp_path / "out")
    assert sorted(p["devices"] for p in probes.values()) == ["4,5", "4,5", "GPU-aa,GPU-bb", "GPU-aa,GPU-bb"]
    assert all(_most_at_once(probes, g) == 1 for g in ("4,5", "GPU-aa,GPU-bb"))
    assert "2 GPU group(s) x 1 run(s) each: 2 run(s) at once (local.max_concurrent 8)" in capsys.readouterr().err


def _fake_nvidia_smi(folder: Path, listing: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}\nEOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return folder


H100S = "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i}a2b)" for i in range(3))
MIG = ("GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5d1e)\n"
       "  MIG 3g.40gb     Device  0: (UUID: MIG-11aa)\n"
       "  MIG 3g.40gb     Device  1: (UUID: MIG-22bb)")


def test_auto_finds_the_gpus_nvidia_smi_lists(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{_fake_nvidia_smi(tmp_path / 'bin', H100S)}{os.pathsep}{os.environ['PATH']}")
    assert visible_gpus({}) == ["0", "1", "2"]
    study = _gpu_study(tmp_path / "s", 3, {"max_concurrent": 3})
    assert main(["sweep", str(study), "--no-progress"]) == 0
    assert sorted(p["devices"] for p in _probes(tmp_path / "s" / "out").values()) == ["0", "1", "2"]


def test_visible_gpus_reads_what_cuda_would():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, environ={"CUDA_VISIBLE_DEVICES": "0"}) == ["2", "3"]
    assert visible_gpus({}, environ={"CUDA_VISIBLE_DEVICES": "1, 0,-1,2"}) == ["1", "0"]  # CUDA stops at -1
    assert visible_gpus({}, environ={"CUDA_VISIBLE_DEVICES": ""}) == []


def test_mig_instances_are_addressed_by_uuid(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{_fake_nvidia_smi(tmp_path / 'bin', MIG)}{os.pathsep}{os.environ['PATH']}")
    assert visible_gpus({}) == ["MIG-11aa", "MIG-22bb"]


def test_without_gpus_or_with_gpus_none_the_environment_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_nvidia_smi(tmp_path / 'bin', H100S)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    study = _gpu_study(tmp_path / "s", 2, {"max_concurrent": 2, "gpus": "none"})
    assert main(["sweep", str(study), "--no-progress"]) == 0
    assert [p["devices"] for p in _probes(tmp_path / "s" / "out").values()] == [None, None]
    assert DeviceSlots([], 1, 1).size is None and DeviceSlots([], 1, 1).take("r") is None


def test_preloaded_runs_get_their_gpu_too(tmp_path):
    """The fork path (local.preload) hands the devices to the run as the subprocess path does. The sweep runs
    in a process of its own: the fork path needs a single-threaded parent, and a test session may hold threads."""
    study = write_study(tmp_path, n=2, heldout=0, local={"max_concurrent": 2, "preload": True},
                        env={"CUDA_VISIBLE_DEVICES": "6,7"}, command="{python} -m regmix_plugin validate {mixture}")
    proc = subprocess.run([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    heads = [next(ln for ln in p.read_text().splitlines() if ln.startswith("=== attempt 1"))
             for p in sorted((tmp_path / "out" / "runs").glob("*/log.txt"))]
    assert sorted(h.split(" GPU ")[1].split()[0] for h in heads) == ["6", "7"]
    assert all("forked, preloaded" in h for h in heads)


def test_more_gpus_per_run_than_visible_is_one_line(tmp_path, capsys):
    study = _gpu_study(tmp_path, 1, {"gpus_per_run": 4}, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert main(["sweep", str(study), "--no-progress"]) == 2
    assert "local.gpus_per_run: 4 GPUs per run, but this sweep sees 2 (0,1)" in capsys.readouterr().err
    with pytest.raises(RegmixError):
        DeviceSlots(["0"], 2, 1)


def test_a_timed_out_run_leaves_no_process_behind(tmp_path):
    """torchrun's workers run in sessions of their own; a run's timeout must stop them as well (here: a
    `setsid` child standing in for a worker), or they keep their GPU."""
    study = write_study(tmp_path, n=1, heldout=0, runs={"retries": 0, "timeout_s": 2},
                        command="bash -c 'setsid sleep 300 & echo $! > {run_dir}/worker.pid; wait' {mixture}")
    assert main(["sweep", str(study), "--no-progress"]) == 1
    pid = int(next((tmp_path / "out" / "runs").glob("*/worker.pid")).read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the run's setsid child outlived its timeout")
        time.sleep(0.1)
