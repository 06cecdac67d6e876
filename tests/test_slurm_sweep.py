"""The Slurm backend against a real one-node Slurm (tests/slurm_cluster.py starts it)."""

from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.runs_table import collect
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)
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
