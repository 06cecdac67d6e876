"""Continual-training replay law: recovery from generated data, sweep files, plan round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.errors import ConfigError
from regmix_plugin.mixture import Mixture
from regmix_plugin.continual.replay import (
    ContinualError,
    ContinualFitConfig,
    ContinualPlan,
    ContinualSpec,
    SweepConfig,
    fit_continual,
    points_from_table,
    write_sweep,
)

GRID = np.array([0.0, 0.2, 0.4, 0.6, 0.8])


def _points(rng, sd=0.002):
    old = 2.0 + 0.8 * np.exp(-3.0 * GRID) + rng.normal(0, sd, GRID.size)
    new = 1.5 + 0.2 * np.exp(2.0 * GRID) + rng.normal(0, sd, GRID.size)
    return pd.DataFrame({"proportion": GRID, "old_loss": old, "new_loss": new})


@pytest.mark.parametrize("tolerance", [0.0, 0.05])
def test_critical_proportion_matches_the_generating_law(tolerance):
    res = fit_continual(_points(np.random.default_rng(0)), base_old_loss=2.3,
                        config=ContinualFitConfig(tolerance=tolerance, safety=0.0))
    true_p = -np.log((0.3 + tolerance) / 0.8) / 3.0
    assert res.old_law.t == pytest.approx(-3.0, rel=0.1)
    assert res.new_law.t == pytest.approx(2.0, rel=0.15)
    assert res.critical_proportion == pytest.approx(true_p, abs=0.02)
    assert res.new_loss_at_critical == pytest.approx(1.5 + 0.2 * np.exp(2.0 * true_p), abs=0.01)
    assert "critical replay proportion" in res.summary()


def test_safety_margin_asks_for_more_replay_under_noise():
    pts = _points(np.random.default_rng(3), sd=0.01)
    plain = fit_continual(pts, 2.3, ContinualFitConfig(safety=0.0))
    safe = fit_continual(pts, 2.3, ContinualFitConfig(safety=2.0))
    assert safe.old_residual_sd > 0
    assert safe.critical_proportion > plain.critical_proportion
    p = safe.critical_proportion
    assert float(safe.old_law.predict(p)) + 2.0 * safe.old_residual_sd <= 2.3 + 1e-9


def test_no_proportion_is_enough_is_reported():
    res = fit_continual(_points(np.random.default_rng(1)), base_old_loss=1.9, config=ContinualFitConfig())
    assert res.critical_proportion is None and res.new_loss_at_critical is None
    assert "no replay proportion" in res.summary()


def test_too_few_proportions_and_bad_tolerance_are_errors():
    pts = _points(np.random.default_rng(2)).iloc[:2]
    with pytest.raises(ContinualError, match="at least 3 proportions"):
        fit_continual(pts, 2.3, ContinualFitConfig())
    with pytest.raises(ConfigError, match="tolerance"):
        ContinualFitConfig(tolerance=-0.1)


def _mixtures(tmp_path):
    old = Mixture.from_dict({"version": 1, "name": "old", "domains": [
        {"name": "web", "weight": 3, "prefixes": ["web/train"]},
        {"name": "books", "weight": 1, "prefixes": ["books/train"]},
        {"name": "code", "weight": 0, "prefixes": ["code/train"]}]})
    new = Mixture.from_dict({"version": 1, "name": "new", "domains": [
        {"name": "code", "weight": 1, "prefixes": ["code/train"]}]})
    (tmp_path / "proxy.yaml").write_text("train: {steps: 5}\n")
    old.save(tmp_path / "old.json")
    new.save(tmp_path / "new.json")
    return tmp_path / "old.json", tmp_path / "new.json"


def test_spec_blends_and_recovers_the_proportion(tmp_path):
    o, n = _mixtures(tmp_path)
    spec = ContinualSpec.from_mixtures(Mixture.load(o), Mixture.load(n))
    w = spec.weights_at(0.4)
    assert w == pytest.approx({"web": 0.3, "books": 0.1, "code": 0.6})
    assert spec.proportion_of(w) == pytest.approx(0.4)
    assert spec.old_loss({"web": 2.0, "books": 4.0, "code": 9.0}) == pytest.approx(2.5)
    with pytest.raises(ContinualError, match="valid/code/loss"):
        spec.new_loss({"web": 2.0})


def test_write_sweep_writes_loadable_mixtures_and_a_plan(tmp_path):
    o, n = _mixtures(tmp_path)
    (tmp_path / "ckpt").mkdir()
    plan = write_sweep(str(o), str(n), str(tmp_path / "ckpt"), tmp_path / "sweep",
                       SweepConfig(str(tmp_path / "proxy.yaml"), [0.8, 0.0, 0.4], backend="slurm"))
    assert plan.proportions == [0.0, 0.4, 0.8]
    back = ContinualPlan.load(tmp_path / "sweep")
    assert back == plan
    spec = back.spec(tmp_path / "sweep")
    rows = []
    for p, rel in zip(back.proportions, back.mixtures):
        mix = Mixture.load(tmp_path / "sweep" / rel)
        assert mix.provenance["continual_proportion"] == p
        assert mix.names == ["web", "books", "code"]  # the new-only domain is kept (evaluated) even at p=1
        assert mix.domains[0].prefixes == [str(tmp_path / "web/train")]  # made absolute
        row = {"run_id": rel, "status": "completed"}
        row.update({f"weight/{d}": w for d, w in zip(mix.names, mix.weights)})
        row.update({"valid/web/loss": 2 + p, "valid/books/loss": 3.0, "valid/code/loss": 1.0})
        rows.append(row)
    pts = points_from_table(pd.DataFrame(rows), spec)
    assert list(pts["proportion"]) == pytest.approx([0.0, 0.4, 0.8])
    assert list(pts["old_loss"]) == pytest.approx([0.75 * (2 + p) + 0.25 * 3.0 for p in (0.0, 0.4, 0.8)])
    with pytest.raises(ConfigError, match="--base-ckpt"):
        write_sweep(str(o), str(n), str(tmp_path / "nope"), tmp_path / "s2", SweepConfig(str(tmp_path / "proxy.yaml")))


def test_the_sweep_study_launches_every_proportion_from_the_base_checkpoint(tmp_path):
    from regmix_plugin.sweep.launch import prepare
    from regmix_plugin.sweep.study import load_study

    o, n = _mixtures(tmp_path)
    ckpt = tmp_path / "base run" / "checkpoints"  # a space: the path must reach the shell quoted
    ckpt.mkdir(parents=True)
    write_sweep(str(o), str(n), str(ckpt), tmp_path / "sweep", SweepConfig(str(tmp_path / "proxy.yaml"), [0.0, 0.5, 1.0]))
    study = load_study(tmp_path / "sweep" / "study.yaml")
    assert study.backend == "local"
    assert study.command.endswith(f"--init-from '{ckpt}'")
    prepared = prepare(study)
    assert prepared.run_ids == ["p0.000", "p0.500", "p1.000"]
    placed = Mixture.load(tmp_path / "sweep" / "runs" / "p0.500" / "mixture.json")
    assert dict(zip(placed.names, placed.weights)) == pytest.approx({"web": 0.375, "books": 0.125, "code": 0.5})


@pytest.mark.parametrize("args, message", [
    (["continual", "fit", "--plan", "{tmp}/nowhere"], "--plan {tmp}/nowhere: continual plan not found; write it with `regmix continual sweep`"),
    (["continual", "sweep", "--original", "{tmp}/old.json", "--new", "{tmp}/new.json", "--base-ckpt", "{tmp}",
      "--config", "{tmp}/proxy.yaml", "--out", "{tmp}/s", "--proportions", "0,0.5,1.5"], "--proportions: 1.5 is outside [0, 1]"),
    (["continual", "sweep", "--original", "{tmp}/old.json", "--new", "{tmp}/new.json", "--base-ckpt", "{tmp}",
      "--config", "{tmp}/proxy.yaml", "--out", "{tmp}/s", "--proportions", "0,a"], "--proportions: '0,a' is not"),
    (["continual", "sweep", "--original", "{tmp}/old.json", "--new", "{tmp}/old.json", "--base-ckpt", "{tmp}",
      "--config", "{tmp}/proxy.yaml", "--out", "{tmp}/s"], "new: the new-data mixture equals the original one"),
])
def test_bad_continual_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    from regmix_plugin.cli import main

    _mixtures(tmp_path)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regmix: error:") and "\n" not in err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert not (tmp_path / "s" / "continual.json").exists()  # nothing half-written
