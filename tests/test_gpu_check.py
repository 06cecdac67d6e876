"""scripts/gpu_check.py where no GPU is: its pre-flight, its time limits and process cleanup, the Makefile target
that runs it in an existing environment, and the design of its CPU reference (issue 23, points 1, 2 and 6).

The rehearsal of every check (tests/test_megatron_e2e.py::test_gpu_check_rehearses_on_cpu) runs the script
whole; these tests stand in for what only a GPU machine would show: a driver too old for torch's CUDA build
(fake ``nvidia-smi`` and torch's own warning), a missing compiler or Python headers, a small /dev/shm, a check
that hangs, torchrun's workers outliving a killed torchrun, and a device whose JIT warm-up draws from a
generator of its own.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from proxy_helpers import REPO

from regmix_plugin.megatron import environment
from regmix_plugin.processes import run_limited, start, stop_tree


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_with(marker: str) -> list[int]:
    """Our processes whose environment carries ``marker`` (every descendant of a command inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except (PermissionError, FileNotFoundError, ProcessLookupError):
                continue
    return found


# ---- point 2: the pre-flight ---------------------------------------------------------------------------------

def test_a_driver_older_than_torchs_cuda_is_named_with_torchs_own_warning():
    warning = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). Please "
               "update your GPU driver")
    lines = environment.cuda_problems("2.9.0+cu128", "12.8", 0, "470.57.02", [warning])
    assert lines[0] == f"torch says: {warning}"
    assert lines[1].startswith("NVIDIA driver 470.57.02 is older than torch 2.9.0+cu128 (CUDA 12.8) needs "
                               "(>= 525.60.13)")
    assert environment.cuda_problems("2.9.0+cu128", "12.8", 8, "550.54.15", []) == []
    assert environment.cuda_problems("2.9.0+cu130", "13.0", 1, "550.54.15", [])[0].startswith(
        "NVIDIA driver 550.54.15 is older than torch 2.9.0+cu130 (CUDA 13.0) needs (>= 580.65.6)")
    assert "CPU-only build" in environment.cuda_problems("2.9.0+cpu", None, 0, None, [])[0]
    assert environment.cuda_problems("2.9.0", "12.8", 0, None, [])[0].startswith("no NVIDIA driver found")
    assert environment.cuda_problems("2.9.0", "12.8", 0, "550.54.15", [])[0].startswith("no CUDA GPU visible")


def test_no_compiler_or_python_headers_or_a_small_shm_is_named(tmp_path, monkeypatch):
    import sysconfig

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(tmp_path / "no-headers")})
    lines = environment.compiler_problems()
    assert [ln.split(" (")[0].split(":")[0] for ln in lines] == ["no C compiler", "no Python headers"]
    assert "torch.compile" in lines[0] and "apt-get install" in lines[1]
    monkeypatch.setenv("CC", "/usr/bin/cc")
    (tmp_path / "no-headers").mkdir()
    (tmp_path / "no-headers" / "Python.h").write_text("")
    assert environment.compiler_problems() == []
    small = environment.shm_problem(str(tmp_path), minimum=1 << 60)
    assert small.startswith(f"{tmp_path} holds ") and "--shm-size=16g or --ipc=host" in small
    assert environment.shm_problem(str(tmp_path), minimum=1) is None
    assert "is missing" in environment.shm_problem(str(tmp_path / "absent"))


def test_gpu_check_says_why_no_gpu_is_usable(tmp_path):
    """The script on a machine whose driver is too old for torch's CUDA build: a fake nvidia-smi and torch's
    own warning (raised by a stand-in for torch.cuda.device_count). It used to hide the warning (a global
    warnings filter) and print only "no CUDA GPU visible"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 470.57.02\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import warnings, torch\n"
        "def device_count():\n"
        "    warnings.warn('CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).')\n"
        "    return 0\n"
        "torch.cuda.device_count = device_count\n")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(site))
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gpu-check: ")]
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert "gpu-check: pre-flight: torch says: CUDA initialization: The NVIDIA driver on your system is too old " \
           "(found version 11040)." in lines
    import torch

    need = ".".join(map(str, environment.MIN_DRIVER[int(torch.version.cuda.split(".")[0])]))
    assert any(ln.startswith(f"gpu-check: pre-flight: NVIDIA driver 470.57.02 is older than torch {torch.__version__}")
               and f"(>= {need})" in ln for ln in lines)
    assert lines[-1].startswith("gpu-check: FAIL  pre-flight: fix the lines above first")


def _make_dry_run(*args, env=None):
    """`make -n` as a user types it. Under `make test` the outer make exports MAKELEVEL/MAKEFLAGS, which turn on
    "make[1]: Entering directory" lines and pass its own variables down: a test must not depend on how it was
    started (CI's failure of 2026-12-06)."""
    env = {k: v for k, v in (env or os.environ).items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-n", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env=env)


def test_make_gpu_check_runs_in_the_environment_you_have():
    """`make gpu-check PYTHON=python3` (an NGC container) installs nothing but the plugin, with --no-deps, and
    runs the check with that Python; it used to build a fresh .venv from the package index."""
    proc = _make_dry_run("gpu-check", "PYTHON=/opt/ngc/python3")
    assert proc.returncode == 0, proc.stderr
    commands = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert commands[0].startswith("/opt/ngc/python3 -m pip install -q --no-deps --no-build-isolation -e .")
    assert commands[1] == "/opt/ngc/python3 scripts/gpu_check.py --out gpu_check_out "
    assert not any("venv" in c or ".venv/bin" in c for c in commands)
    # An exported PYTHON is find_python312.sh's hint for building .venv: only the command line's selects.
    fresh = _make_dry_run("-B", "gpu-check", "VENV=/tmp/regmix-no-such-venv",
                          env={**os.environ, "PYTHON": "/opt/ngc/python3"})
    assert "-m venv /tmp/regmix-no-such-venv" in fresh.stdout
    assert "/tmp/regmix-no-such-venv/bin/python scripts/gpu_check.py --out gpu_check_out" in fresh.stdout


def test_preflight_only_names_a_broken_transformer_engine(tmp_path):
    site = tmp_path / "site" / "transformer_engine"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text('__version__ = "2.8.0"\n')  # no transformer_engine.pytorch
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu",
                           "--preflight-only", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]  # a rehearsal hides TE from its launches
    assert any(ln.startswith("gpu-check: pre-flight: Transformer Engine: transformer_engine 2.8.0 at ")
               and "has no working PyTorch extension" in ln for ln in proc.stdout.splitlines())


# ---- point 6: each check its own limit; nothing left running ----------------------------------------------------

def test_a_command_over_its_limit_is_stopped_with_everything_it_started(tmp_path):
    """Even a grandchild in a session of its own (as torchrun's workers are) is stopped."""
    pid_file = tmp_path / "pid"
    script = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 600' & sleep 600"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_limited(["bash", "-c", script], 3, grace=2)
    assert time.monotonic() - t0 < 30
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid)


def test_torchrun_workers_outlive_torchrun_unless_the_tree_is_stopped(tmp_path):
    """The fact behind point 6, pinned on the installed torch: torchrun starts each worker in its own session,
    so a timeout that kills torchrun (subprocess.run's) leaves the workers running; stop_tree stops them."""
    worker = tmp_path / "worker.py"
    worker.write_text(f"import os, time\nopen(os.path.join({str(tmp_path)!r}, f'pid-{{os.getpid()}}'), 'w').close()\n"
                      "time.sleep(600)\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(worker)]
    for how in ("kill torchrun", "stop the tree"):
        for f in tmp_path.glob("pid-*"):
            f.unlink()
        proc = start(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
        deadline = time.monotonic() + 240
        while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(f.name[4:]) for f in tmp_path.glob("pid-*")]
        assert len(workers) == 2, "torchrun did not start its workers in time"
        assert all(os.getsid(w) != os.getsid(proc.pid) for w in workers)  # their own sessions
        if how == "kill torchrun":
            proc.kill()  # what subprocess.run(timeout=...) does
            proc.wait()
            time.sleep(2)
            assert all(alive(w) for w in workers)  # left behind
            for w in workers:
                os.kill(w, signal.SIGKILL)
        else:
            stop_tree(proc.pid, grace=5)
            proc.wait()
            assert not any(alive(w) for w in workers)


@pytest.mark.megatron_e2e
def test_a_tiny_budget_times_each_check_out_and_leaves_nothing_running(tmp_path):
    """Every check gets its share of the budget: with 40 s for all, each times out at its own limit (none is
    'skipped' because an earlier one used the whole budget), and no process of the check survives it."""
    marker = f"regmix-gpu-check-{uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONWARNINGS="ignore", REGMIX_TEST_MARKER=marker)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--gpus", "1",
                           "--proxies", "2", "--budget", "40", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gpu-check: ")]
    assert proc.returncode == 1, "\n".join(lines) + proc.stderr[-2000:]
    import json

    results = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert len(results) == 4 and not any("skipped" in r["detail"] for r in results)
    assert sum(r["limit_s"] for r in results) <= 41
    assert any(r["detail"].startswith("timed out at its limit") for r in results[1:3]), results  # a Megatron launch
    for r in results:
        assert r["ok"] or r["seconds"] <= r["limit_s"] + 20, r  # stopped at its limit (+ the grace to stop it)
    time.sleep(1)
    assert processes_with(marker) == []


# ---- point 1: the CPU reference compares the same weights -----------------------------------------------------
# tests/test_megatron_e2e.py::test_gpu_check_rehearses_on_cpu pins it: the rehearsal's device launches draw their
# JIT warm-up on "cuda" from a generator of their own, as on a GPU (scripts/gpu_check.py, _env), its reference
# does not, and the check must still find one set of weights (relative difference < 1e-6). A second test that
# ran the same two launches again cost 90 s of the suite and proved nothing more.
