"""`regmix sweep` with the local backend: runs, failures and retries, resumability, locks, study errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from regmix_plugin.cli import main
from regmix_plugin.errors import ConfigError
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.sweep.runner import EXIT_BUSY, load_spec, run
from regmix_plugin.sweep.state import RunLock, is_locked
from regmix_plugin.sweep.study import load_study
from sweep_helpers import write_study


def statuses(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/status.json"))}


def test_sweep_records_failures_with_reasons_retries_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    study = write_study(tmp_path, n=5, heldout=1, env={"TOY_BEHAVIOUR": "n0002=exit,n0003=nan,n0004=flaky"})
    out = tmp_path / "out"
    assert main(["sweep", str(study), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "6 runs: 4 completed, 2 failed" in text and "n0003 failed: exit code 1: nan loss at step 20" in text
    st = statuses(out)
    assert [a["state"] for a in st["n0002"]["attempts"]] == ["failed", "failed"]  # retries: 1
    assert st["n0002"]["reason"] == "exit code 3"
    assert [a["state"] for a in st["n0004"]["attempts"]] == ["failed", "completed"]
    # The flaky run's first attempt was archived, so its metrics file holds one attempt only.
    assert (out / "runs" / "n0004" / "attempts" / "1" / "metrics.jsonl").is_file()
    assert len((out / "runs" / "n0004" / "metrics.jsonl").read_text().splitlines()) == 6
    for run_dir in (out / "runs").iterdir():
        assert (run_dir / "log.txt").is_file() and (run_dir / "mixture.json").is_file()

    logs = {p: p.read_text() for p in (out / "runs").glob("*/log.txt")}
    assert main(["sweep", str(study), "--no-progress"]) == 1  # nothing left to run: finished and out of retries
    assert {p: p.read_text() for p in logs} == logs
    assert statuses(out) == st

    # The failures are fixed; --retry-failed gives the failed runs another round and nothing else.
    study.write_text(study.read_text().replace("n0002=exit,n0003=nan,", ""))
    assert main(["sweep", str(study), "--no-progress", "--retry-failed"]) == 0
    after = statuses(out)
    assert [a["state"] for a in after["n0002"]["attempts"]] == ["failed", "failed", "completed"]
    assert after["n0001"] == st["n0001"]


def test_timeout_kills_the_run_and_records_it(tmp_path):
    study = write_study(tmp_path, n=2, heldout=0, env={"TOY_BEHAVIOUR": "n0001=hang"},
                        runs={"retries": 0, "timeout_s": 1})
    t0 = time.monotonic()
    assert main(["sweep", str(study), "--no-progress"]) == 1
    assert time.monotonic() - t0 < 60  # the two-minute hang was cut short
    st = statuses(tmp_path / "out")
    assert st["n0001"]["state"] == "failed" and st["n0001"]["reason"] == "timeout after 1s"
    assert st["n0002"]["state"] == "completed"


def _sweep_proc(study: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_until_mid_sweep(out: Path, k: int, proc: subprocess.Popen) -> None:
    """Until ``k`` runs completed and another is running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        states = [s.get("state") for s in statuses(out).values()]
        if states.count("completed") >= k and "running" in states:
            return
        time.sleep(0.05)
    pytest.fail("the sweep finished or stalled before it could be interrupted")


@pytest.fixture(scope="module")
def uninterrupted_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    assert main(["sweep", str(write_study(root, n=5, heldout=1)), "--no-progress"]) == 0
    return collect([root / "out"])[0]


@pytest.mark.parametrize("kill", ["sweep-process", "process-group"])
def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path, kill, uninterrupted_table):
    expected = uninterrupted_table

    study = write_study(tmp_path / "killed", n=5, heldout=1, env={"TOY_SLEEP": "0.1"})
    out = tmp_path / "killed" / "out"
    proc = _sweep_proc(study)
    _wait_until_mid_sweep(out, 2, proc)
    if kill == "sweep-process":
        os.kill(proc.pid, signal.SIGKILL)  # runners outlive it; the rerun must wait for them, not rerun them
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # runners die too (their commands with them): rerun restarts those
    proc.wait()
    assert sum(s["state"] == "completed" for s in statuses(out).values()) < 6  # killed mid-way

    assert main(["sweep", str(study), "--no-progress"]) == 0
    got, warnings = collect([out])
    pd.testing.assert_frame_equal(got, expected)
    assert warnings == []
    for run_id, st in statuses(out).items():
        states = [a["state"] for a in st["attempts"]]
        assert states[-1] == "completed" and set(states[:-1]) <= {"interrupted"}, (run_id, states)
        # No attempt ran twice into the same metrics file: 3 train and 3 eval lines exactly.
        assert len((out / "runs" / run_id / "metrics.jsonl").read_text().splitlines()) == 6
    if kill == "process-group":
        assert any("interrupted" in [a["state"] for a in st["attempts"]] for st in statuses(out).values())


def test_a_run_held_by_a_live_runner_is_never_started_twice(tmp_path):
    study = write_study(tmp_path, n=2, heldout=0)
    assert main(["sweep", str(study), "--prepare-only"]) == 0
    spec = load_spec(tmp_path / "out" / "sweep.json")
    run_dir = tmp_path / "out" / "runs" / "n0001"
    lock = RunLock(run_dir)
    assert lock.acquire()
    try:
        assert is_locked(run_dir)
        assert run(spec, "n0001") == EXIT_BUSY
        assert not (run_dir / "metrics.jsonl").exists()
    finally:
        lock.release()
    assert not is_locked(run_dir)
    assert run(spec, "n0001") == 0

    # A lock left by a runner on another host counts while its heartbeat is fresh, and is dead when stale.
    lock_file = run_dir / "lock"
    lock_file.write_text(json.dumps({"pid": 1, "host": socket.gethostname() + "-other", "since": "x"}))
    assert is_locked(run_dir, stale_lock_s=600)
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    assert not is_locked(run_dir, stale_lock_s=600)


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "colour: unknown key; allowed: name, base_mixture"),
    ({"command": "{python} train.py {mixtur}"}, "command: unknown placeholder {mixtur}"),
    ({"command": "{python} train.py"}, "command: the template never passes {mixture}"),
    ({"backend": "k8s"}, "backend: unknown value 'k8s'; choose one of local, slurm"),
    ({"mixtures": "mixtures"}, "mixtures/synthesize: give exactly one"),
    ({"runs": {"retries": -1}}, "runs.retries: expected an integer >= 0, got -1"),
    ({"local": {"max_concurent": 2}}, "local.max_concurent: unknown key; allowed: max_concurrent"),
    ({"slurm": {"cpus_per_task": 0}}, "slurm.cpus_per_task: expected an integer >= 1, got 0"),
    ({"synthesize": {"n": 0}}, "synthesize.n: 0 must be >= 1"),
])
def test_bad_study_files_give_one_line_errors(tmp_path, change, message):
    study = write_study(tmp_path)
    data = yaml.safe_load(study.read_text())
    data.update(change)
    study.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_study(study)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mixture_folder_study_and_mismatched_domains(tmp_path, capsys):
    study = write_study(tmp_path, n=2, heldout=0)
    assert main(["synthesize", str(tmp_path / "natural.json"), "--out", str(tmp_path / "mix"), "--n", "3",
                 "--heldout", "1", "--minimum", "0.001"]) == 0
    data = yaml.safe_load(study.read_text())
    del data["synthesize"]
    data["mixtures"] = "mix"
    study.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(study), "--no-progress"]) == 0
    assert sorted(statuses(tmp_path / "out")) == ["h0001", "n0001", "n0002", "n0003"]
    table, _ = collect([tmp_path / "out"])
    # The held-out mixture stays marked as such, so the fitter can keep it out of training.
    assert dict(zip(table["run_id"], table["split"])) == {"h0001": "heldout", "n0001": "train", "n0002": "train",
                                                           "n0003": "train"}

    bad = json.loads((tmp_path / "mix" / "n0002.json").read_text())
    bad["domains"] = bad["domains"][:3]
    (tmp_path / "mix" / "n0002.json").write_text(json.dumps(bad))
    assert main(["sweep", str(study), "--no-progress"]) == 2
    assert "n0002.json has domains web, code, books but base_mixture has" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "megatron_configs").glob("study-*.yaml")),
                         ids=lambda p: p.name)
def test_example_studies_validate(path):
    study = load_study(path)
    assert study.name and "{mixture}" in study.command


@pytest.mark.parametrize("content", [None, "{\"command\": [", "\xff\xfe"])
def test_the_runner_refuses_a_missing_or_broken_sweep_json_in_one_line(tmp_path, capsys, content):
    from regmix_plugin.sweep.runner import main as runner_main

    spec = tmp_path / "sweep.json"
    if content is not None:
        spec.write_bytes(content.encode("latin-1"))
    assert runner_main([str(spec), "n0001"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(spec) in err and "sweep spec" in err and "regmix sweep" in err
