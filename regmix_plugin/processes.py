"""Run a command under a time limit and, when it runs over, stop everything it started.

``torchrun`` starts each worker in a process session of its own (torch's elastic ``SubprocessHandler`` passes
``start_new_session=True``), so killing torchrun, or even torchrun's process group, leaves the workers running:
they keep their GPUs (and NCCL waits for its own timeout) long after the launch was given up. :func:`stop_tree`
therefore collects the command's whole process tree first, asks every process group in it to stop (SIGTERM:
torchrun then also stops its workers, and Megatron saves nothing half-written), and kills whatever is left after
a grace period (SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and all its descendants, wherever their session or group (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_groups(procs: list[psutil.Process], sig: int) -> None:
    groups = set()
    for p in procs:
        try:
            groups.add(os.getpgid(p.pid))
        except ProcessLookupError:
            continue
    for g in groups - {os.getpgrp()}:  # never our own group
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(pid: int, grace: float = 5.0) -> None:
    """Stop process ``pid`` and all its descendants, whatever session or group they moved to."""
    stop_all(tree(pid), grace)


def stop_all(procs: list[psutil.Process], grace: float = 5.0) -> None:
    """Stop ``procs`` (and what they start meanwhile): SIGTERM to each one's process group and to each, SIGKILL
    to whatever is left after ``grace`` seconds."""
    _signal_groups(procs, signal.SIGTERM)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    # Children started during the grace period are in the tree of a survivor (or in a group already signalled).
    alive = list({p.pid: p for p in alive + [c for p in alive for c in tree(p.pid)[1:]]}.values())
    _signal_groups(alive, signal.SIGKILL)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def start(cmd: list[str], **popen) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own, so that stopping it never signals the caller."""
    return subprocess.Popen(cmd, start_new_session=True, **popen)


def run_limited(cmd: list[str], limit: float, grace: float = 5.0, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=limit)`` that stops the whole tree.

    Raises ``subprocess.TimeoutExpired`` (with the output so far) when ``limit`` seconds pass; also stops the
    tree when the caller is interrupted (Ctrl-C reaches only the terminal's foreground group, not the new session).
    """
    proc = start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = proc.communicate(timeout=max(limit, 0.1))
    except subprocess.TimeoutExpired:
        stop_tree(proc.pid, grace)
        out, err = _drain(proc, grace)
        raise subprocess.TimeoutExpired(cmd, limit, output=out, stderr=err) from None
    except BaseException:
        stop_tree(proc.pid, grace)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _drain(proc: subprocess.Popen, grace: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:  # a pipe still held open by something outside the tree
        proc.kill()
        return "", ""
