"""The local backend: up to ``local.max_concurrent`` runners at once on this machine, with a progress bar.

Each run gets its own runner process (:mod:`regmix_plugin.sweep.runner`), which holds the run's lock for as
long as the command runs. Runners are started with ``--wait``: if a runner from an earlier, killed sweep
still holds a run, the new one waits for it and then finds the run finished, instead of starting it twice.

``local.preload`` (on by default for the plugin's own ``{python} -m regmix_plugin ...`` commands): this
process imports the trainer (torch, megatron-core) once, and each runner, and each attempt, is a fork of
it instead of a new interpreter. A tiny CPU proxy spends about as long starting Python and importing
megatron-core as it does training, so this roughly halves a sweep of them (BENCHMARKS.md). Each attempt
is still its own process in its own session: a crash, a timeout or a kill affects that run only.

GPUs (``local.gpus``, ``local.gpus_per_run``, ``local.runs_per_gpu``): on a machine with GPUs each run gets
its own through ``CUDA_VISIBLE_DEVICES``, so eight proxies on an eight-GPU node train on eight GPUs instead of
all on ``cuda:0``. A run is started on the group of ``gpus_per_run`` GPUs with the fewest runs, and a group
holds at most ``runs_per_gpu`` runs at once (several small proxies can share a GPU: the GPU check measures
whether packing pays, docs/megatron.md); ``max_concurrent`` still caps the total. See docs/sweeps.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections import deque

from regmix_plugin.config_schema import Checked, Choice, Number, Switch, config, either
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.sweep import runner
from regmix_plugin.sweep.backend import register
from regmix_plugin.sweep.state import COMPLETED, FAILED

_POLL_S = 0.2


@config(prefix="local")
class LocalConfig:
    max_concurrent: Number(integer=True, ge=1) = 1  # runs at once on this machine
    # Fork runs from a process that imported torch and megatron-core once ("auto": when the command is
    # `{python} -m regmix_plugin ...`; see this module's docstring).
    preload: Switch = "auto"
    # The GPUs runs are spread over, each run seeing only its own through CUDA_VISIBLE_DEVICES: "auto" (the
    # study env's CUDA_VISIBLE_DEVICES, else this process's, else every GPU `nvidia-smi -L` lists; none found:
    # runs are started as on a CPU machine), "none" (CUDA_VISIBLE_DEVICES left as it is), or a list of ids.
    gpus: either(Choice("auto", "none", says="expected auto, none or a list of GPU ids, got {value}"),
                 list[Checked(lambda v: _device_id(v))]) = "auto"
    gpus_per_run: Number(integer=True, ge=1) = 1  # e.g. 2 for a data-parallel proxy under torchrun
    runs_per_gpu: Number(integer=True, ge=1) = 1  # runs sharing one GPU (gpus_per_run 1 only)

    def __post_init__(self) -> None:
        if self.runs_per_gpu > 1 and self.gpus_per_run > 1:
            raise ConfigError("local.runs_per_gpu: runs share a GPU only with gpus_per_run: 1; set one of them to 1")


def _device_id(v):
    # An index, a GPU-/MIG- UUID: what CUDA_VISIBLE_DEVICES takes, one device per item.
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and v < 0):
        raise ConfigError(f"expected a GPU index >= 0 or UUID, got {v!r}")
    text = str(v).strip()
    if not text or any(c in text for c in ", \t"):
        raise ConfigError(f"expected one GPU index or UUID, got {v!r}")
    return text


def visible_gpus(study_env: dict[str, str], environ=os.environ) -> list[str]:
    """The GPUs this sweep may use: ``CUDA_VISIBLE_DEVICES`` of the study's env or of this process when set
    (CUDA stops at the first invalid entry, such as ``-1``), else every device ``nvidia-smi -L`` lists (MIG
    instances by UUID, since a MIG instance is addressed only so), else none."""
    listed = study_env.get("CUDA_VISIBLE_DEVICES", environ.get("CUDA_VISIBLE_DEVICES"))
    if listed is not None:
        out = []
        for item in (x.strip() for x in listed.split(",")):
            if not item or item.startswith("-"):
                break
            out.append(item)
        return out
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if smi.returncode != 0:
        return []
    lines = smi.stdout.splitlines()
    migs = [ln.split("UUID:")[1].strip(" )") for ln in lines if ln.strip().startswith("MIG") and "UUID:" in ln]
    return migs or [str(i) for i, _ in enumerate(ln for ln in lines if ln.startswith("GPU "))]


class DeviceSlots:
    """Which GPUs each running run holds: groups of ``gpus_per_run`` GPUs, each taking ``runs_per_gpu`` runs."""

    def __init__(self, gpus: list[str], gpus_per_run: int, runs_per_gpu: int) -> None:
        if gpus and len(gpus) < gpus_per_run:
            raise RegmixError(f"local.gpus_per_run: {gpus_per_run} GPUs per run, but this sweep sees "
                              f"{len(gpus)} ({','.join(gpus)}); lower gpus_per_run or make more GPUs visible")
        self.groups = [",".join(gpus[i:i + gpus_per_run]) for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)]
        self.capacity = runs_per_gpu
        self.held: dict[str, str] = {}  # run id -> its group

    @classmethod
    def for_study(cls, study) -> "DeviceSlots":
        local = study.local
        gpus = [] if local.gpus == "none" else visible_gpus(study.env) if local.gpus == "auto" else list(local.gpus)
        return cls(gpus, local.gpus_per_run, local.runs_per_gpu)

    @property
    def size(self) -> int | None:
        """How many runs the GPUs take at once; None without GPUs (no limit of theirs)."""
        return len(self.groups) * self.capacity if self.groups else None

    def take(self, run_id: str) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` of a run starting now (the least busy group, the first of equals)."""
        if not self.groups:
            return None
        load = {g: 0 for g in self.groups}
        for g in self.held.values():
            load[g] += 1
        group = min(self.groups, key=lambda g: load[g])
        if load[group] >= self.capacity:
            raise RuntimeError("no free GPU slot: the caller starts at most `size` runs")  # a bug, not input
        self.held[run_id] = group
        return group

    def give_back(self, run_id: str) -> None:
        self.held.pop(run_id, None)


@register("local")
class LocalBackend:
    """The study's runs on this machine, ``local.max_concurrent`` at a time (the module docstring)."""

    def run(self, prep, progress: bool = True) -> None:
        run_local(prep, progress)


def preloads(study) -> bool:
    """Whether the runs of ``study`` are forked from a preloaded process (``local.preload``)."""
    if study.local.preload == "auto":
        return runner.can_run_inprocess(study.command)
    return bool(study.local.preload)


def _preload(env: dict[str, str]) -> None:
    # The study's environment first: OMP_NUM_THREADS and friends are read when torch is imported.
    os.environ.update(env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Transformer Engine / apex absent: said once per run in its log
        import regmix_plugin.proxy.trainer  # noqa: F401


def _start(prep, run_id: str, spec: dict | None, devices: str | None):
    if spec is None:
        gpu = ["--devices", devices] if devices is not None else []
        return subprocess.Popen(
            [sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), run_id, "--wait", *gpu],
            stdin=subprocess.DEVNULL,
        )
    # The preloaded parent imported torch but never initialised CUDA, so the fork reads its devices afresh.
    return runner.fork_call(lambda: runner.run(spec, run_id, wait=True, inprocess=True, devices=devices))


def run_local(prep, progress: bool = True) -> None:
    from tqdm import tqdm  # here, not at import: the CLI parser imports this module for the backend names

    states = prep.states()
    todo = deque(r for r in prep.run_ids if states[r] not in (COMPLETED, FAILED))
    done = len(prep.run_ids) - len(todo)
    limit = prep.study.local.max_concurrent
    slots = DeviceSlots.for_study(prep.study)
    if todo and slots.size is not None:
        if slots.size < limit:
            print(f"regmix sweep: {len(slots.groups)} GPU group(s) x {slots.capacity} run(s) each: {slots.size} "
                  f"run(s) at once (local.max_concurrent {limit})", file=sys.stderr)
        limit = min(limit, slots.size)
    spec = None
    if todo and preloads(prep.study):
        if threading.active_count() > 1:
            # Only the forking thread survives a fork, with whatever locks the others held: unsafe. This
            # happens when the sweep is called from a threaded Python program, not from `regmix sweep`.
            # (OpenBLAS's idle pool, started by numpy, is fork-safe: it has its own atfork handlers.)
            print("regmix sweep: local.preload: this process runs several threads; starting each run in a new "
                  "interpreter instead", file=sys.stderr)
        else:
            _preload(prep.study.env)
            spec = runner.load_spec(prep.spec_path)
    active: dict = {}
    # No tqdm monitor thread: forking a process that has threads other than the forking one is unsafe.
    tqdm.monitor_interval = 0
    bar = tqdm(total=len(prep.run_ids), initial=done, unit="run", desc=prep.study.name, disable=not progress,
               file=sys.stderr)
    counts = {COMPLETED: 0, FAILED: 0}
    try:
        while todo or active:
            while todo and len(active) < limit:
                run_id = todo.popleft()
                active[run_id] = _start(prep, run_id, spec, slots.take(run_id))
            time.sleep(_POLL_S)
            for run_id, proc in list(active.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del active[run_id]
                slots.give_back(run_id)
                counts[COMPLETED if rc == 0 else FAILED] += 1
                bar.update(1)
                bar.set_postfix(ok=counts[COMPLETED], failed=counts[FAILED])
    finally:
        bar.close()
