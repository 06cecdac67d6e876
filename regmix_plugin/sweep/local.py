"""The local backend: up to ``local.max_concurrent`` runners at once on this machine, with a progress bar.

Each run gets its own runner process (:mod:`regmix_plugin.sweep.runner`), which holds the run's lock for as
long as the command runs. Runners are started with ``--wait``: if a runner from an earlier, killed sweep
still holds a run, the new one waits for it and then finds the run finished, instead of starting it twice.

``local.preload`` (on by default for the plugin's own ``{python} -m regmix_plugin ...`` commands): this
process imports the trainer (torch, megatron-core) once, and each runner, and each attempt, is a fork of
it instead of a new interpreter. A tiny CPU proxy spends about as long starting Python and importing
megatron-core as it does training, so this roughly halves a sweep of them (BENCHMARKS.md). Each attempt
is still its own process in its own session: a crash, a timeout or a kill affects that run only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections import deque

from regmix_plugin.config_schema import Number, Switch, config
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


def _start(prep, run_id: str, spec: dict | None):
    if spec is None:
        return subprocess.Popen(
            [sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), run_id, "--wait"],
            stdin=subprocess.DEVNULL,
        )

    return runner.fork_call(lambda: runner.run(spec, run_id, wait=True, inprocess=True))


def run_local(prep, progress: bool = True) -> None:
    from tqdm import tqdm  # here, not at import: the CLI parser imports this module for the backend names

    states = prep.states()
    todo = deque(r for r in prep.run_ids if states[r] not in (COMPLETED, FAILED))
    done = len(prep.run_ids) - len(todo)
    limit = prep.study.local.max_concurrent
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
                active[run_id] = _start(prep, run_id, spec)
            time.sleep(_POLL_S)
            for run_id, proc in list(active.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del active[run_id]
                counts[COMPLETED if rc == 0 else FAILED] += 1
                bar.update(1)
                bar.set_postfix(ok=counts[COMPLETED], failed=counts[FAILED])
    finally:
        bar.close()
