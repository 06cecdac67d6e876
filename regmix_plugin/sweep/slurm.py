"""The Slurm backend: one job array per submission, generated ``sbatch`` script, state from status files.

Without ``slurmdbd`` there is no ``sacct``, so we never ask Slurm how a task ended: every task runs the
same runner as the local backend, which writes ``status.json`` in its run directory. ``squeue`` only tells
us whether a submission is still queued or running, so that a rerun neither resubmits runs that are
still in the queue nor waits forever for a task that died.
"""

from __future__ import annotations

import getpass
import shlex
import subprocess
import sys
import time
from dataclasses import field
from pathlib import Path

from regmix_plugin.config_schema import Flag, Number, Text, config
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json, atomic_write_text
from regmix_plugin.sweep.backend import register
from regmix_plugin.sweep.state import COMPLETED, FAILED, PENDING, now, read_json

JOBS = "jobs.json"


@config(prefix="slurm")
class SlurmConfig:
    """Per-task resources of the job array (each task runs one mixture)."""

    partition: Text | None = None
    account: Text | None = None
    qos: Text | None = None
    cpus_per_task: Number(integer=True, ge=1) = 1
    mem: Text | None = None  # e.g. "4G"
    time: Text | None = None  # e.g. "01:00:00"
    gpus_per_task: Number(integer=True, ge=0) = 0
    array_parallelism: Number(integer=True, ge=1) | None = None  # at most this many tasks at once (the %N of --array)
    extra_directives: list[Text] = field(default_factory=list)  # more "#SBATCH ..." lines, e.g. "--constraint=a100"
    setup: Text = ""  # shell lines run before the task (module load ..., source venv)
    wait: Flag = True  # wait for the array to finish (a progress bar), or submit and return
    poll_s: Number(ge=0.1) = 10.0


def _slurm(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RegmixError(f"backend: slurm: `{cmd[0]}` not found; install Slurm or use backend: local") from None
    if res.returncode != 0:
        raise RegmixError(f"backend: slurm: `{' '.join(cmd[:2])}` failed: {res.stderr.strip().splitlines()[-1:]}")
    return res.stdout


def queued_jobs(job_ids: list[str]) -> set[str]:
    """The subset of ``job_ids`` (array job ids) with any task still pending or running."""
    if not job_ids:
        return set()
    # All of this user's jobs rather than `-j IDS`: squeue rejects ids it has already forgotten.
    out = _slurm(["squeue", "-h", "-o", "%F", "-u", getpass.getuser()])
    return {line.strip() for line in out.splitlines() if line.strip()} & set(job_ids)


def sbatch_script(prep, run_ids_file: Path, log_dir: Path, n: int) -> str:
    s = prep.study.slurm
    array = f"0-{n - 1}" + (f"%{s.array_parallelism}" if s.array_parallelism else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=regmix-{prep.study.name}", f"#SBATCH --array={array}",
             f"#SBATCH --output={log_dir}/%A_%a.out", f"#SBATCH --cpus-per-task={s.cpus_per_task}",
             "#SBATCH --ntasks=1"]
    for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                        ("mem", s.mem), ("time", s.time)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    if s.gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={s.gpus_per_task}")
    lines += [f"#SBATCH {d}" for d in s.extra_directives]
    lines += ["set -eo pipefail"]
    if s.setup:
        lines.append(s.setup)
    runner = [sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), "--runs-file", str(run_ids_file)]
    lines.append("exec " + " ".join(shlex.quote(x) for x in runner))
    return "\n".join(lines) + "\n"


def submit(prep) -> str | None:
    """Submit the runs that are neither finished, nor held by a runner, nor still in the queue."""
    slurm_dir = prep.study.out / "slurm"
    jobs = (read_json(slurm_dir / JOBS) or {}).get("jobs", [])
    in_queue = queued_jobs([j["job_id"] for j in jobs])
    queued_runs = {r for j in jobs if j["job_id"] in in_queue for r in j["runs"]}
    states = prep.states()
    todo = [r for r in prep.run_ids if states[r] == PENDING and r not in queued_runs]
    if not todo:
        return None
    sub = slurm_dir / time.strftime("%Y%m%dT%H%M%S")
    sub.mkdir(parents=True, exist_ok=True)
    runs_file = atomic_write_text(sub / "runs.txt", "\n".join(todo) + "\n")
    script = atomic_write_text(sub / "job.sbatch", sbatch_script(prep, runs_file, sub, len(todo)))
    job_id = _slurm(["sbatch", "--parsable", str(script)]).strip().split(";")[0]
    jobs.append({"job_id": job_id, "runs": todo, "submitted": now(), "dir": str(sub)})
    atomic_write_json(slurm_dir / JOBS, {"jobs": jobs})
    print(f"sweep {prep.study.name}: submitted {len(todo)} runs as Slurm job array {job_id} ({script})",
          file=sys.stderr)
    return job_id


@register("slurm")
class SlurmBackend:
    """The study's runs as Slurm job arrays (the module docstring)."""

    def run(self, prep, progress: bool = True) -> None:
        run_slurm(prep, progress)


def run_slurm(prep, progress: bool = True) -> None:
    from tqdm import tqdm  # here, not at import: the CLI parser imports this module for the backend names

    submit(prep)
    if not prep.study.slurm.wait:
        return
    slurm_dir = prep.study.out / "slurm"
    ids = [j["job_id"] for j in (read_json(slurm_dir / JOBS) or {}).get("jobs", [])]
    bar = tqdm(total=len(prep.run_ids), unit="run", desc=prep.study.name, disable=not progress, file=sys.stderr)
    try:
        while True:
            states = prep.states()
            finished = sum(1 for s in states.values() if s in (COMPLETED, FAILED))
            bar.update(finished - bar.n)
            if not queued_jobs(ids):
                break
            time.sleep(prep.study.slurm.poll_s)
    finally:
        bar.close()
