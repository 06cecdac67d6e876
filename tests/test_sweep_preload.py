"""The local backend's ``preload``: runs forked from one process that imported torch and megatron-core.

Each sweep here is a real `regmix sweep` process (the command users type) running the real proxy trainer on
a tiny real corpus; the forked runs must give exactly what fresh interpreters give, and a failing or hanging
run must be recorded the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from regmix_plugin.errors import ConfigError
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.sweep.local import preloads
from regmix_plugin.sweep.runner import can_run_inprocess
from regmix_plugin.sweep.study import DEFAULT_COMMAND, load_study
from data_helpers import make_tiny_corpus
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG

COMMAND = DEFAULT_COMMAND + "".join(f" --set {o}" for o in TEST_OVERRIDES)


def _study(folder: Path, natural: Path, preload, command: str = COMMAND, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pre", "base_mixture": str(natural), "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 3, "heldout": 0, "seed": 0, "minimum": 0.001, "nonzero": "all"},
        "out": "out", "command": command, "env": {"OMP_NUM_THREADS": "1"},
        "local": {"max_concurrent": 2, "preload": preload}, **extra,
    }))
    return path


def _sweep(study: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress"],
                          capture_output=True, text=True, timeout=600)


def _attempts(out: Path) -> dict[str, list[dict]]:
    return {p.parent.name: json.loads(p.read_text())["attempts"] for p in sorted((out / "runs").glob("*/status.json"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"), domains=3)[1]


def test_preloaded_runs_equal_fresh_interpreter_runs(tmp_path, corpus):
    tables = {}
    for preload in (True, False):
        study = _study(tmp_path / str(preload), corpus, preload)
        res = _sweep(study)
        assert res.returncode == 0, res.stderr[-2000:]
        out = study.parent / "out"
        tables[preload], warnings = collect([out])
        assert warnings == []
        for run_id, attempts in _attempts(out).items():
            log = (out / "runs" / run_id / "log.txt").read_text()
            assert ("forked, preloaded process" in log) == preload, log[-500:]
            assert [a["state"] for a in attempts] == ["completed"]
        # TensorBoard files written by a forked run are complete (the child leaves by os._exit).
        assert all(list((out / "runs" / r / "tb").glob("events.*")) for r in tables[preload]["run_id"])
    losses = [c for c in tables[True].columns if c.startswith(("valid/", "train/"))]
    assert len(tables[True]) == 3 and losses
    pd.testing.assert_frame_equal(tables[True][["run_id", *losses]], tables[False][["run_id", *losses]])


def test_preloaded_failures_and_timeouts_are_recorded(tmp_path, corpus):
    # n0001 fails (unknown config key: exit 2 with a one-line reason in its log), the others hang past the
    # timeout (a million steps), are killed and recorded; the sweep process itself is unharmed.
    study = _study(tmp_path, corpus, "auto", command=COMMAND + " --set train.steps=1000000",
                   runs={"retries": 0, "timeout_s": 8})
    spec_cmd = load_study(study).command
    assert can_run_inprocess(spec_cmd) and preloads(load_study(study))
    res = _sweep(study)
    assert res.returncode == 1
    attempts = _attempts(tmp_path / "out")
    assert set(attempts) == {"n0001", "n0002", "n0003"}
    for run_id, at in attempts.items():
        assert [a["state"] for a in at] == ["failed"] and at[0]["reason"] == "timeout after 8s", (run_id, at)
    # No trainer outlives its timeout.
    ps = subprocess.run(["pgrep", "-f", str(tmp_path / "out")], capture_output=True, text=True).stdout.split()
    assert ps == []


def test_a_failing_preloaded_command_is_recorded_with_its_exit_code(tmp_path, corpus):
    study = _study(tmp_path, corpus, True, command=COMMAND + " --set train.no_such_key=1")
    res = _sweep(study)
    assert res.returncode == 1
    for run_id, at in _attempts(tmp_path / "out").items():
        assert at[-1]["state"] == "failed" and at[-1]["reason"] == "exit code 2", (run_id, at)
        log = (tmp_path / "out" / "runs" / run_id / "log.txt").read_text()
        assert "regmix: error: " in log and "no_such_key" in log


@pytest.mark.parametrize("command", ["{python} toy.py {mixture}", DEFAULT_COMMAND + " && echo done",
                                     DEFAULT_COMMAND + " > $HOME/x"])
def test_preload_true_needs_a_plain_plugin_command(tmp_path, corpus, command):
    assert not can_run_inprocess(command)
    with pytest.raises(ConfigError, match=r"local\.preload: true needs a command of the form"):
        load_study(_study(tmp_path, corpus, True, command=command))
    assert not preloads(load_study(_study(tmp_path, corpus, "auto", command=command)))


def test_preload_value_is_checked(tmp_path, corpus):
    with pytest.raises(ConfigError, match=r"local\.preload: expected true, false or auto, got 'yes please'"):
        load_study(_study(tmp_path, corpus, "yes please"))


def test_max_concurrent_flag_keeps_the_study_preload_setting(tmp_path, corpus):
    # `--max-concurrent` once replaced the whole `local` section, so `preload: false` silently became
    # `auto` and the runs were forked. A failing command keeps the run short; the log says how it ran.
    study = _study(tmp_path, corpus, False, command=COMMAND + " --set train.no_such_key=1",
                   synthesize={"n": 1, "heldout": 0, "seed": 0, "minimum": 0.001})
    res = subprocess.run([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress",
                          "--max-concurrent", "1"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    log = (tmp_path / "out" / "runs" / "n0001" / "log.txt").read_text()
    assert "=== attempt 1" in log and "preloaded" not in log
