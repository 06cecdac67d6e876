"""Run one mixture of a sweep, with its lock, retries, log and status: ``python -m regmix_plugin.sweep.runner``.

Both backends run this same supervisor: the local backend as a child process per run, the Slurm backend as
each array task. It reads ``<out>/sweep.json`` (written by ``regmix sweep``), so a task needs nothing else.

Attempt outcomes:

- ``completed``: exit code 0, ``outcome.json`` (when the command writes one) says completed, and no
  non-finite loss in ``metrics.jsonl``;
- ``failed``: non-zero exit, ``outcome.json`` status failed (its reason is kept), a NaN/inf loss, or the
  timeout; retried up to ``runs.retries`` times;
- ``interrupted``: the supervisor itself was stopped (SIGTERM/SIGINT, e.g. ``scancel``) or died; it does
  not count against the retries, and the next ``regmix sweep`` restarts the run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regmix_plugin import processes
from regmix_plugin.errors import RegmixError, one_line
from regmix_plugin.io import read_json_file
from regmix_plugin.sweep.state import (
    COMPLETED, FAILED, LOG, METRICS, OUTCOME, OWN_FILES, RUNNING, SCHEDULE, RunLock, Status, now, read_json,
)

EXIT_BUSY = 75  # another live runner holds this run
INTERRUPTED = "interrupted"
_PR_SET_PDEATHSIG = 1


class _Stop(Exception):
    pass


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the runner dies, so a dead runner never leaves its command running."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


# A command the runner may run in a forked copy of itself instead of under bash: the plugin's own CLI with
# nothing a shell would interpret. Checked on the template; placeholder values are single arguments.
_INPROCESS = re.compile(r"^\{python\} -m regmix_plugin [^;&|<>$`()\\\n]*$")


def can_run_inprocess(command_template: str) -> bool:
    return bool(_INPROCESS.match(command_template.strip()))


def render_command(spec: dict[str, Any], run_id: str, run_dir: Path) -> str:
    values = {
        "python": spec["python"], "mixture": str(run_dir / "mixture.json"), "config": spec.get("config") or "",
        "schedule": str(run_dir / SCHEDULE),
        "run_dir": str(run_dir), "run_id": run_id, "study_dir": spec["study_dir"],
    }
    return spec["command"].format(**{k: shlex.quote(v) for k, v in values.items()})


def judge(run_dir: Path, returncode: int | None, timed_out: bool, timeout_s: float | None) -> tuple[str, str | None]:
    """``(state, reason)`` of a finished attempt from its exit code, ``outcome.json`` and ``metrics.jsonl``."""
    outcome = read_json(run_dir / OUTCOME)
    said = outcome.get("reason") if outcome else None
    if timed_out:
        return FAILED, f"timeout after {timeout_s:g}s"
    if returncode != 0:
        reason = f"exit code {returncode}"
        return FAILED, f"{reason}: {said}" if said else reason
    if outcome is not None and outcome.get("status") != COMPLETED:
        return FAILED, said or f"outcome.json status {outcome.get('status')!r}"
    bad = first_nonfinite(run_dir / METRICS)
    if bad:
        return FAILED, bad
    return COMPLETED, None


def first_nonfinite(path: Path) -> str | None:
    """``"nan train/loss at step 12"`` for the first non-finite loss in a metrics file, else None."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; collection reports it
            for k, v in rec.items():
                if k.endswith("loss") and isinstance(v, float) and not math.isfinite(v):
                    return f"{v} {k} at step {rec.get('step')}"
    return None


def archive_outputs(run_dir: Path, attempt: int) -> None:
    """Move what an earlier attempt wrote to ``attempts/<attempt>/``, so the next one starts clean."""
    leftovers = [p for p in run_dir.iterdir() if p.name not in OWN_FILES]
    if not leftovers:
        return
    dest = run_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    for p in leftovers:
        shutil.move(str(p), str(dest / p.name))


class _Forked:
    """The part of :class:`subprocess.Popen` that :func:`_attempt` uses, for a child made by ``os.fork``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def fork_call(fn: Callable[[], int]) -> _Forked:
    """Run ``fn()`` in a forked child whose exit code is its return value (1 if it raises); its stdin is
    /dev/null, as for the subprocesses it stands in for.

    The child is a copy of this process, so whatever it already imported (torch, megatron-core) costs
    nothing again. It leaves by ``os._exit``: no interpreter teardown, which on a tiny proxy costs as much
    as the last seconds of training.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = fn()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fork_cli(argv: list[str], env: dict[str, str], cwd: str, log) -> _Forked:
    """Run ``python -m regmix_plugin <argv>`` in a forked child, as ``bash -c`` would run the same command line:
    in its own session (so it is killed as a group like the bash child), with its own environment and working
    directory, its output going to the run's log.

    The child runs the package's ``__main__`` as ``python -m`` does (runpy), rather than importing the CLI:
    the command line is the interface, as for the bash child, and the library below the CLI does not import
    it (tests/test_import_graph.py)."""

    def child() -> int:
        os.setsid()
        _die_with_parent()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = ["regmix", *argv]
        runpy.run_module("regmix_plugin", run_name="__main__", alter_sys=True)  # raises SystemExit(its code)
        return 0

    return fork_call(child)


def _attempt(spec: dict[str, Any], run_id: str, run_dir: Path, number: int, inprocess: bool = False,
             devices: str | None = None) -> tuple[str, str | None, int | None]:
    cmd = render_command(spec, run_id, run_dir)
    env = {**os.environ, **spec.get("env", {}), "REGMIX_RUN_ID": run_id, "REGMIX_ATTEMPT": str(number)}
    if devices is not None:  # the GPUs the local backend gave this run; after the study's env, which listed them all
        env["CUDA_VISIBLE_DEVICES"] = devices
    timeout = spec.get("timeout_s")
    inprocess = inprocess and can_run_inprocess(spec["command"])
    with open(run_dir / LOG, "a", encoding="utf-8") as log:
        how = " (in a forked, preloaded process)" if inprocess else ""
        on = f" GPU {devices}" if devices else ""
        log.write(f"\n=== attempt {number} on {socket.gethostname()}{on} at {now()}{how}: {cmd}\n")
        log.flush()
        if inprocess:
            proc = _fork_cli(shlex.split(cmd)[3:], env, spec["study_dir"], log)
        else:
            proc = subprocess.Popen(
                ["bash", "-c", cmd], cwd=spec["study_dir"], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )

        def stop(signum, frame):
            raise _Stop(signal.Signals(signum).name)

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        timed_out = False
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.returncode
        except _Stop as e:
            _kill_group(proc)
            log.write(f"=== attempt {number} interrupted by {e} at {now()}\n")
            return INTERRUPTED, f"runner stopped by {e}", None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        state, reason = judge(run_dir, rc, timed_out, timeout)
        log.write(f"=== attempt {number} {state}" + (f": {reason}" if reason else "") + f" at {now()}\n")
    return state, reason, rc


def _kill_group(proc: subprocess.Popen | _Forked) -> None:
    """Stop the attempt and everything it started: its process group (SIGTERM, 10 s, SIGKILL; waited for, so
    its exit code is ours to read), then whatever had left that group. torchrun starts each worker in a
    session of its own, so a timed-out Megatron or data-parallel proxy would otherwise keep running, and keep
    its GPU, after its run was given up."""
    others = processes.tree(proc.pid)[1:]  # before the group dies: orphans leave the attempt's tree
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    processes.stop_all([p for p in others if p.is_running()], grace=10)


def run(spec: dict[str, Any], run_id: str, wait: bool = False, inprocess: bool = False,
        devices: str | None = None) -> int:
    """Run ``run_id`` to completion or until out of retries. Exit code: 0 completed, 1 failed,
    :data:`EXIT_BUSY` when another runner holds it, 130 when interrupted.

    ``inprocess``: run a ``{python} -m regmix_plugin ...`` command in a fork of this process rather than in
    a new interpreter (the local backend's ``preload``). ``devices``: the run's ``CUDA_VISIBLE_DEVICES``
    (the local backend's GPU assignment), or None to leave it as the environment has it."""
    run_dir = Path(spec["runs_dir"]) / run_id
    lock = RunLock(run_dir)
    if not lock.acquire(wait=wait, stale_lock_s=spec.get("stale_lock_s", 600.0)):
        return EXIT_BUSY
    try:
        st = Status.load(run_dir)
        if st.state == RUNNING and st.attempts:
            # The lock was free, so the runner that wrote "running" died: record it, do not count it.
            last = st.attempts[-1]
            last.update(state=INTERRUPTED, reason=last.get("reason") or "runner died", ended=now())
            st.state = INTERRUPTED
            st.save(run_dir)
        retries = int(spec.get("retries", 0))
        while st.state != COMPLETED:
            if st.failures() > retries:
                st.state = FAILED
                st.save(run_dir)
                return 1
            number = len(st.attempts) + 1
            archive_outputs(run_dir, number - 1)
            st.attempts.append({"attempt": number, "state": RUNNING, "host": socket.gethostname(),
                                "pid": os.getpid(), "started": now(), "reason": None})
            st.state = RUNNING
            st.save(run_dir)
            state, reason, rc = _attempt(spec, run_id, run_dir, number, inprocess, devices)
            st.attempts[-1].update(state=state, reason=reason, returncode=rc, ended=now())
            st.state = state
            st.save(run_dir)
            if state == INTERRUPTED:
                return 130
        return 0
    finally:
        lock.release()


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The sweep's ``sweep.json``; a missing or unreadable one is a one-line :class:`RegmixError`."""
    return read_json_file(path, RegmixError, str(path), "sweep spec",
                          "write it with `regmix sweep ... --prepare-only` (or rerun the sweep)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m regmix_plugin.sweep.runner", description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="the sweep's sweep.json")
    ap.add_argument("run_id", nargs="?", help="run to execute (default: line $SLURM_ARRAY_TASK_ID+1 of --runs-file)")
    ap.add_argument("--runs-file", help="one run id per line (Slurm arrays)")
    ap.add_argument("--wait", action="store_true", help="wait for another runner's lock instead of exiting 75")
    ap.add_argument("--devices", help="CUDA_VISIBLE_DEVICES of the run (the local backend's GPU assignment)")
    args = ap.parse_args(argv)
    run_id = args.run_id
    if run_id is None:
        if not args.runs_file or "SLURM_ARRAY_TASK_ID" not in os.environ:
            ap.error("give a run_id, or --runs-file inside a Slurm array task")
        lines = Path(args.runs_file).read_text().split()
        run_id = lines[int(os.environ["SLURM_ARRAY_TASK_ID"])]
    try:
        spec = load_spec(args.spec)
    except RegmixError as e:
        print(f"{ap.prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return run(spec, run_id, wait=args.wait, devices=args.devices)


if __name__ == "__main__":
    sys.exit(main())
