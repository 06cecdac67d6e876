"""The per-domain metrics sink: metrics.jsonl and TensorBoard files read back by TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from regmix_plugin.errors import ConfigError
from regmix_plugin.metrics import MetricsSink, last_values, read_metrics


def _scalars(run_dir):
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_and_tensorboard(tmp_path):
    sink = MetricsSink(tmp_path, "abc123", "n0001")
    sink.log(10, 1000, {"train/loss": 4.5, "lr": 0.001})
    sink.log(10, 1000, {"valid/web/loss": 4.75, "valid/code/loss": 3.25})
    sink.set_mixture("def456", "phase2")
    sink.log(20, 2000, {"train/loss": 4.0, "lr": 0.0005})
    sink.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [10, 10, 20]
    assert recs[1]["valid/web/loss"] == 4.75 and recs[1]["mixture_name"] == "n0001" and recs[1]["tokens"] == 1000
    assert recs[2]["mixture_hash"] == "def456" and isinstance(recs[2]["time"], float)
    assert last_values(recs)["train/loss"] == 4.0 and last_values(recs)["valid/code/loss"] == 3.25
    tb = _scalars(tmp_path)
    assert tb["train/loss"] == [(10, 4.5), (20, 4.0)]
    assert tb["valid/web/loss"] == [(10, 4.75)] and tb["valid/code/loss"] == [(10, 3.25)]


def test_restart_drops_what_came_after_the_checkpoint(tmp_path):
    sink = MetricsSink(tmp_path, "h", "m")
    for step in (1, 2, 3, 4):
        sink.log(step, step * 10, {"train/loss": 10.0 - step})
    sink.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "tok')  # a torn line from a crash mid-write is skipped by the reader
    # TensorBoard orders event files by name, which starts with the creation second; a real resume is a new
    # process started later, so let the clock tick as it would.
    time.sleep(1.05)
    sink = MetricsSink(tmp_path, "h", "m", resume_step=2)
    sink.log(3, 30, {"train/loss": 0.5})
    sink.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["train/loss"]) for r in recs] == [(1, 9.0), (2, 8.0), (3, 0.5)]
    assert _scalars(tmp_path)["train/loss"][-1] == (3, 0.5)


def test_nan_is_written_as_json_nan_and_reserved_keys_are_refused(tmp_path):
    sink = MetricsSink(tmp_path, "h", "m", tensorboard=False)
    sink.log(1, 1, {"train/loss": float("nan")})
    with pytest.raises(ValueError, match="reserved"):
        sink.log(1, 1, {"step": 3.0})
    sink.close()
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["train/loss"] != json.loads(line)["train/loss"]  # NaN
    assert not (tmp_path / "tb").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_enabled_without_the_package_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="metrics.wandb"):
        MetricsSink(tmp_path, "h", "m", tensorboard=False, wandb=True)


def test_wandb_offline_run_gets_the_same_metrics(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sink = MetricsSink(tmp_path, "h", "m", tensorboard=False, wandb=True, wandb_project="regmix-test",
                       config={"train": {"steps": 2}})
    run = sink._wandb
    sink.log(1, 10, {"train/loss": 4.0})
    sink.log(2, 20, {"valid/web/loss": 3.5})
    sink.log(3, 30, {"train/loss": 3.0})  # W&B commits a step when a later one arrives
    assert run.summary["valid/web/loss"] == 3.5 and run.summary["train/loss"] == 4.0 and run.summary["tokens"] == 20
    assert run.config["train"]["steps"] == 2
    sink.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert wandb.run is None
