"""The Slurm backend: a job array per submission (several when the study has more runs than the cluster's
``MaxArraySize``), generated ``sbatch`` scripts, state from status files.

Without ``slurmdbd`` there is no ``sacct``, so we never ask Slurm how a task ended: every task runs the
same runner as the local backend, which writes ``status.json`` in its run directory. ``squeue`` only tells
us whether a submission is still queued or running, so that a rerun neither resubmits runs that are
still in the queue nor waits forever for a task that died.
"""

from __future__ import annotations

import getpass
import re
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
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's own default, when `scontrol show config` does not say


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


def max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (``scontrol show config``): an array's task indices must stay below it,
    so one array holds at most that many runs. Slurm's default when the line is missing."""
    out = _slurm(["scontrol", "show", "config"])
    m = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)\s*$", out, re.M)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def sbatch_script(prep, run_ids_file: Path, log_dir: Path, n: int, after: str | None = None) -> str:
    """The job array of ``n`` runs listed in ``run_ids_file``; ``after``: a job id it waits for (afterany)."""
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
    if after:
        lines.append(f"#SBATCH --dependency=afterany:{after}")
    lines += [f"#SBATCH {d}" for d in s.extra_directives]
    lines += ["set -eo pipefail"]
    if s.setup:
        lines.append(s.setup)
    runner = [sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), "--runs-file", str(run_ids_file)]
    lines.append("exec " + " ".join(shlex.quote(x) for x in runner))
    return "\n".join(lines) + "\n"


def _submission_dir(slurm_dir: Path) -> Path:
    """A new folder per submission, named by its time; a second one in the same second gets a suffix (its
    arrays' run lists must not overwrite those of arrays still in the queue)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    sub, k = slurm_dir / stamp, 1
    while sub.exists():
        k += 1
        sub = slurm_dir / f"{stamp}-{k}"
    sub.mkdir(parents=True)
    return sub


def submit(prep) -> list[str]:
    """Submit the runs that are neither finished, nor held by a runner, nor still in the queue; returns the
    job ids submitted.

    More runs than the cluster's ``MaxArraySize`` go as several arrays (``runs-1.txt``/``job-1.sbatch``,
    ...), each recorded in ``jobs.json`` as soon as it is submitted. With ``array_parallelism`` each array
    waits for the one before it (``afterany``), so that the limit holds for the study, not per array.
    """
    slurm_dir = prep.study.out / "slurm"
    jobs = (read_json(slurm_dir / JOBS) or {}).get("jobs", [])
    in_queue = queued_jobs([j["job_id"] for j in jobs])
    queued_runs = {r for j in jobs if j["job_id"] in in_queue for r in j["runs"]}
    states = prep.states()
    todo = [r for r in prep.run_ids if states[r] == PENDING and r not in queued_runs]
    if not todo:
        return []
    size = max_array_size()
    parts = [todo[i:i + size] for i in range(0, len(todo), size)]
    sub = _submission_dir(slurm_dir)
    submitted: list[str] = []
    for k, runs in enumerate(parts, 1):
        suffix = f"-{k}" if len(parts) > 1 else ""
        after = submitted[-1] if submitted and prep.study.slurm.array_parallelism else None
        runs_file = atomic_write_text(sub / f"runs{suffix}.txt", "\n".join(runs) + "\n")
        script = atomic_write_text(sub / f"job{suffix}.sbatch", sbatch_script(prep, runs_file, sub, len(runs), after))
        job_id = _slurm(["sbatch", "--parsable", str(script)]).strip().split(";")[0]
        jobs.append({"job_id": job_id, "runs": runs, "submitted": now(), "dir": str(sub)})
        atomic_write_json(slurm_dir / JOBS, {"jobs": jobs})
        submitted.append(job_id)
        split = f" (array {k} of {len(parts)}: the cluster's MaxArraySize is {size})" if len(parts) > 1 else ""
        print(f"sweep {prep.study.name}: submitted {len(runs)} runs as Slurm job array {job_id} ({script}){split}",
              file=sys.stderr)
    return submitted


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
