"""The Slurm backend against a real one-node Slurm (tests/slurm_cluster.py starts it)."""

from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.runs_table import collect
from slurm_cluster import MAX_ARRAY_SIZE, slurm_cluster  # noqa: F401  (the fixture)
from sweep_helpers import write_study

pytestmark = pytest.mark.slurm


def test_slurm_job_array_runs_a_sweep_and_a_rerun_only_resubmits_failures(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    study = write_study(tmp_path / "study", n=3, heldout=1, backend="slurm",
                        env={"TOY_BEHAVIOUR": "n0002=exit"}, runs={"retries": 0},
                        slurm={"cpus_per_task": 1, "time": "00:05:00", "array_parallelism": 2, "poll_s": 0.5})
    out = tmp_path / "study" / "out"

    assert main(["sweep", str(study), "--no-progress"]) == 1  # n0002 fails by design

    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert len(jobs) == 1 and sorted(jobs[0]["runs"]) == ["h0001", "n0001", "n0002", "n0003"]
    script = (out / "slurm").glob("*/job.sbatch").__next__().read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --time=00:05:00" in script
    # Slurm itself ran the tasks: their logs are in the submission folder and squeue no longer lists them.
    assert len(list((out / "slurm").glob("*/*_*.out"))) == 4
    assert subprocess.run(["squeue", "-h", "-j", jobs[0]["job_id"]], capture_output=True, text=True).stdout.strip() == ""

    df, warnings = collect([out])
    status = dict(zip(df["run_id"], df["status"]))
    assert status == {"h0001": "completed", "n0001": "completed", "n0002": "failed", "n0003": "completed"}
    assert df.loc[df["status"] == "completed", "valid/web/loss"].notna().all()
    assert json.loads((out / "runs" / "n0002" / "status.json").read_text())["reason"] == "exit code 3"

    # A rerun with --retry-failed and the failure fixed submits only n0002, as a second array.
    study.write_text(study.read_text().replace("n0002=exit", "none=ok"))
    assert main(["sweep", str(study), "--no-progress", "--retry-failed"]) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert [j["runs"] for j in jobs[1:]] == [["n0002"]]
    df2, _ = collect([out])
    assert (df2["status"] == "completed").all()
    pd.testing.assert_frame_equal(df2[df2.run_id != "n0002"].reset_index(drop=True),
                                  df[df.run_id != "n0002"].reset_index(drop=True))


def test_scancelled_task_is_recorded_and_resubmitted_by_the_next_sweep(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    study = write_study(tmp_path / "study", n=2, heldout=0, backend="slurm", env={"TOY_BEHAVIOUR": "n0001=hang"},
                        slurm={"time": "00:05:00", "wait": False})
    out = tmp_path / "study" / "out"
    assert main(["sweep", str(study), "--no-progress"]) == 1  # submitted, not waited for
    job = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"][0]["job_id"]

    status = out / "runs" / "n0001" / "status.json"
    other = out / "runs" / "n0002" / "status.json"

    def state(path):
        return json.loads(path.read_text())["state"] if path.is_file() else None

    # Cancel only once n0002 has finished and n0001 hangs: otherwise the scancel may also catch n0002 still
    # starting up (slow on a cold machine), and the next sweep rightly resubmits both.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (state(status) == "running" and state(other) == "completed"):
        time.sleep(0.2)
    assert state(other) == "completed", f"n0002 did not complete in time: {state(other)}"
    # While the array is queued or running, a rerun submits nothing new.
    assert main(["sweep", str(study), "--no-progress"]) == 1
    assert len(json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]) == 1

    subprocess.run(["scancel", job], check=True)
    while time.monotonic() < deadline and subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                                                         text=True).stdout.strip():
        time.sleep(0.2)
    first = json.loads(status.read_text())
    assert first["state"] != "completed" and first["attempts"][0]["state"] in ("interrupted", "failed")

    study.write_text(study.read_text().replace("n0001=hang", "none=ok").replace("wait: false", "wait: true"))
    assert main(["sweep", str(study), "--no-progress"]) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert jobs[-1]["runs"] == ["n0001"]
    assert json.loads(status.read_text())["attempts"][-1]["state"] == "completed"


def test_more_runs_than_max_array_size_go_as_several_arrays_and_a_cancelled_one_resumes(tmp_path, slurm_cluster,
                                                                                       monkeypatch):
    # The test cluster's MaxArraySize is 5 (tests/slurm_cluster.py): sbatch refuses --array=0-11 there.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    from regmix_plugin.sweep.slurm import max_array_size

    assert max_array_size() == MAX_ARRAY_SIZE == 5
    study = write_study(tmp_path / "study", n=12, heldout=0, backend="slurm", env={"TOY_SLEEP": "0.3"},
                        runs={"retries": 0}, slurm={"time": "00:05:00", "wait": False, "poll_s": 0.5})
    out = tmp_path / "study" / "out"
    assert main(["sweep", str(study), "--no-progress"]) == 1  # submitted, not waited for

    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert [len(j["runs"]) for j in jobs] == [5, 5, 2]
    assert sorted(r for j in jobs for r in j["runs"]) == [f"n{i:04d}" for i in range(1, 13)]
    sub = out / "slurm" / jobs[0]["dir"].rsplit("/", 1)[-1]
    scripts = [(sub / f"job-{k}.sbatch").read_text() for k in (1, 2, 3)]
    assert ["#SBATCH --array=0-4" in scripts[0], "#SBATCH --array=0-4" in scripts[1],
            "#SBATCH --array=0-1" in scripts[2]] == [True] * 3
    assert [(sub / f"runs-{k}.txt").read_text().split() for k in (1, 2, 3)] == [j["runs"] for j in jobs]

    # Cancel the second array (its tasks queued behind the first, or some already running), let the rest finish.
    cancelled = jobs[1]
    subprocess.run(["scancel", cancelled["job_id"]], check=True)
    deadline = time.monotonic() + 180
    ids = ",".join(j["job_id"] for j in jobs)
    while time.monotonic() < deadline and subprocess.run(["squeue", "-h", "-j", ids], capture_output=True,
                                                         text=True).stdout.strip():
        time.sleep(0.5)
    df, _ = collect([out])
    status = dict(zip(df["run_id"], df["status"]))
    left = sorted(r for r in cancelled["runs"] if status[r] != "completed")
    assert left, "the scancel came after the whole array had run; nothing was left to resume"
    assert all(status[r] == "completed" for j in (jobs[0], jobs[2]) for r in j["runs"])

    # The rerun submits exactly the cancelled array's unfinished runs, as one more array, and finishes the study.
    study.write_text(study.read_text().replace("wait: false", "wait: true"))
    assert main(["sweep", str(study), "--no-progress"]) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert len(jobs) == 4 and sorted(jobs[3]["runs"]) == left
    df, _ = collect([out])
    assert (df["status"] == "completed").all() and len(df) == 12


def test_array_parallelism_bounds_the_study_when_it_is_split(tmp_path, slurm_cluster, monkeypatch):
    # Each array waits for the one before it (afterany), so at most array_parallelism tasks run at once.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    study = write_study(tmp_path / "study", n=6, heldout=0, backend="slurm",
                        slurm={"time": "00:05:00", "array_parallelism": 2, "poll_s": 0.5})
    out = tmp_path / "study" / "out"
    assert main(["sweep", str(study), "--no-progress"]) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert [len(j["runs"]) for j in jobs] == [5, 1]
    sub = out / "slurm" / jobs[0]["dir"].rsplit("/", 1)[-1]
    assert "--dependency" not in (sub / "job-1.sbatch").read_text()
    assert f"#SBATCH --dependency=afterany:{jobs[0]['job_id']}\n" in (sub / "job-2.sbatch").read_text()
    started = [json.loads((out / "runs" / r / "status.json").read_text())["attempts"][0]["started"]
               for r in jobs[1]["runs"]]
    ended = [json.loads((out / "runs" / r / "status.json").read_text())["attempts"][-1]["ended"]
             for r in jobs[0]["runs"]]
    assert min(started) >= max(ended)
