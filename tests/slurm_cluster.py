"""A real one-node Slurm cluster on localhost for tests (recipe: /work/shared/ENVIRONMENT.md).

``slurm_cluster`` (session fixture) writes a ``slurm.conf`` in a temp folder, starts ``munged`` (unless
one already runs), ``slurmctld`` and ``slurmd``, waits until the node is idle, and yields the environment
(``SLURM_CONF``) that ``sbatch``/``squeue`` need; at the end it stops the daemons it started. It skips,
saying why, when the binaries are missing (install them with scripts/install_system_packages.sh) or we
are not root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
MAX_ARRAY_SIZE = 5


def skip_reason() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing); run scripts/install_system_packages.sh"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key missing; reinstall the munge package"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _conf(root: Path) -> str:
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    cpus = os.cpu_count() or 1
    return "\n".join([
        "ClusterName=regmixtest",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "ReturnToService=2",
        "MinJobAge=86400",
        "SchedulerParameters=sched_interval=1",
        # Far below Slurm's default 1001, so that a test study of a dozen runs needs several job arrays.
        f"MaxArraySize={MAX_ARRAY_SIZE}",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        "SlurmctldPort=16817",
        "SlurmdPort=16818",
        f"NodeName=localhost CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 "
        f"RealMemory={int(mem_mb * 0.8)} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n"


def _munge_running() -> bool:
    return subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None

    def start(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_conf(self.root))
        if not _munge_running():
            run_dir = Path("/run/munge")
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", _binary("munged")], check=True, capture_output=True)
            # munged daemonizes; its pid file names the daemon (pgrep could catch the exiting parent).
            pid_file = run_dir / "munged.pid"
            for _ in range(50):
                if pid_file.is_file() and pid_file.read_text().strip():
                    self.munged_pid = int(pid_file.read_text().strip())
                    break
                time.sleep(0.1)
        log = open(self.root / "daemons.out", "a")
        # -i: ignore saved state from an earlier cluster in this folder; -D: stay in the foreground (ours to stop).
        self.procs.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i"], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))
        time.sleep(0.5)
        self.procs.append(subprocess.Popen([_binary("slurmd"), "-D", "-N", "localhost"], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))
        self._wait_idle()

    def _wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            res = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            state = res.stdout.strip()
            if res.returncode == 0 and state.startswith("idle"):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        self.stop()
        logs = "".join((self.root / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log") if (self.root / f).exists())
        pytest.fail(f"local Slurm did not come up (node state {state!r}); logs:\n{logs}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        if self.munged_pid is not None:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.munged_pid = None


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        pytest.skip("a slurmctld is already running on this machine; not starting a second test cluster")
    root = Path(tempfile.mkdtemp(prefix="regmix-slurm-"))
    cluster = Cluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
