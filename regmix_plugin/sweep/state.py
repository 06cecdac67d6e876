"""Per-run state on disk: ``status.json`` (owned by the sweep) and the run lock.

A run directory holds ``mixture.json`` (the mixture this run trains on), ``status.json``, ``log.txt``, the
``lock`` file and whatever the command writes (``metrics.jsonl``, ``outcome.json``, ...). Outputs of an
earlier attempt are moved to ``attempts/<k>/`` before the next one starts, so a metrics file never mixes
two attempts.

The lock is an ``flock`` on ``lock``: the kernel drops it when the holder dies, so a crashed runner never
leaves a stale lock on its own host. The file also records ``pid``/``host`` and is touched every
``HEARTBEAT_S`` seconds; on another host (a Slurm node writing to a shared file system whose ``flock`` may
not span hosts) a lock whose heartbeat is older than the study's ``stale_lock_s`` is taken as dead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regmix_plugin.io import atomic_write_json

STATUS = "status.json"
LOCK = "lock"
LOG = "log.txt"
OUTCOME = "outcome.json"
METRICS = "metrics.jsonl"
MIXTURE = "mixture.json"
# A schedule run's schedule.yaml and phase mixtures (the sweep writes them; {schedule} names the YAML)
SCHEDULE_DIR = "schedule"
SCHEDULE = f"{SCHEDULE_DIR}/schedule.yaml"
OWN_FILES = {STATUS, LOCK, LOG, MIXTURE, SCHEDULE_DIR, "attempts"}
HEARTBEAT_S = 30.0

# What `run_state` reports.
COMPLETED, FAILED, RUNNING, PENDING = "completed", "failed", "running", "pending"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Status:
    """The sweep's record of one run; ``attempts`` keeps every attempt with its reason."""

    run_id: str
    state: str = PENDING
    attempts: list[dict[str, Any]] | None = None
    reset_at: int = 0  # failures before this attempt index do not count (after --retry-failed)

    @classmethod
    def load(cls, run_dir: Path) -> "Status":
        data = read_json(run_dir / STATUS) or {}
        return cls(run_id=data.get("run_id", run_dir.name), state=data.get("state", PENDING),
                   attempts=list(data.get("attempts") or []), reset_at=int(data.get("reset_at", 0)))

    def save(self, run_dir: Path) -> None:
        last = self.attempts[-1] if self.attempts else {}
        atomic_write_json(run_dir / STATUS, {
            "run_id": self.run_id, "state": self.state, "attempt": len(self.attempts or []),
            "reason": last.get("reason"), "updated": now(), "reset_at": self.reset_at,
            "attempts": self.attempts or [],
        })

    def failures(self) -> int:
        """Attempts that ran the command and failed; interrupted attempts (our supervisor died) do not count."""
        return sum(1 for a in (self.attempts or [])[self.reset_at:] if a.get("state") == FAILED)


class RunLock:
    """An exclusive, crash-safe lock on one run directory (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self, wait: bool = False, stale_lock_s: float = 600.0) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # Without `wait`, try for a moment: a reader's `is_locked` holds the lock for microseconds.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.1)
        if _foreign_holder_alive(self.path, stale_lock_s):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return False
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        os.ftruncate(self._fd, 0)  # an empty lock file tells other hosts that nobody holds it
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def fd(self) -> int | None:
        return self._fd


def _foreign_holder_alive(path: Path, stale_lock_s: float) -> bool:
    """True when the lock file names a holder on another host whose heartbeat is recent."""
    info = read_json(path)
    if not info or info.get("host") == socket.gethostname():
        return False
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < stale_lock_s


def is_locked(run_dir: Path, stale_lock_s: float = 600.0) -> bool:
    """Whether a live runner holds the run (without taking the lock for longer than a moment)."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return _foreign_holder_alive(path, stale_lock_s)


def run_state(run_dir: Path, retries: int, stale_lock_s: float = 600.0) -> str:
    """``completed``, ``failed`` (out of retries), ``running`` (a live runner holds it) or ``pending``."""
    if is_locked(run_dir, stale_lock_s):
        return RUNNING
    st = Status.load(run_dir)
    if st.state == COMPLETED:
        return COMPLETED
    if st.state == FAILED and st.failures() > retries:
        return FAILED
    return PENDING
