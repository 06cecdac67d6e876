"""Multi-phase schedules chosen by regression (docs/phases.md): synthesis, sweep and collect, fit, optimise, export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix_plugin.cli import main
from regmix_plugin.errors import ConfigError
from regmix_plugin.schedule import Schedule
from regmix_plugin.synthesize.sampler import SynthConfig, plan
from regmix_plugin.synthesize.phases import synthesize_schedules

from test_synthesize import SKEWED, skewed_base


def _synth(tmp_path, *flags):
    skewed_base(tmp_path)
    return main(["synthesize", str(tmp_path / "base.json"), "--out", str(tmp_path / "syn"), "--n", "8",
                 "--heldout", "2", "--minimum", "0.001", "--phases", "0.8", *flags])


# ---- schedule space and synthesis ------------------------------------------------------------------
def test_synthesize_phases_writes_valid_schedules_with_per_phase_columns(tmp_path):
    assert _synth(tmp_path, "--phase-mode", "anchored") == 0
    out = tmp_path / "syn"
    man = json.loads((out / "manifest.json").read_text())
    assert man["phases"]["starts"] == [0.0, 0.8] and [e["split"] for e in man["mixtures"]].count("heldout") == 2
    sched = Schedule.load(out / "n0001" / "schedule.yaml")
    assert sched.fractional and sched.fractions() == [0.0, 0.8]
    assert np.allclose(sched.lengths(), [0.8, 0.2])
    assert sched.domain_order() == list(SKEWED)  # both phases list the same domains
    df = pd.read_csv(out / "weights.csv")
    p0 = df[[f"weight/p0/{d}" for d in SKEWED]].to_numpy()
    p1 = df[[f"weight/p1/{d}" for d in SKEWED]].to_numpy()
    np.testing.assert_allclose(p0.sum(axis=1), 1, atol=1e-9)
    np.testing.assert_allclose(p1.sum(axis=1), 1, atol=1e-9)
    assert (df["phase/p1/start"] == 0.8).all()
    resolved = sched.resolve(100)
    assert [p.start for p in resolved.phases] == [0, 80] and resolved.megatron_args() == ["--phase-transition-iterations", "80"]


def test_schedule_caps_count_a_domain_once_over_the_whole_schedule(tmp_path):
    base = skewed_base(tmp_path)
    # 2M target tokens, at most 2 epochs: rare (2k tokens) may take 0.002 of the whole run's tokens.
    cfg = SynthConfig(n=30, heldout=0, max_usage=None, target_tokens=2_000_000, max_epochs=2.0, minimum=1e-4,
                      temperature=1.0, phases=[0.5])
    p = plan(cfg, base)
    res = synthesize_schedules(cfg, p)
    exposure = 0.5 * res.weights[:, 0] + 0.5 * res.weights[:, 1]
    caps = np.array(list(SKEWED.values())) * 2.0 / 2_000_000
    assert (exposure <= np.minimum(1, caps) + 1e-9).all()
    assert res.stats["rejected"] > 0
    # the same seed gives the same schedules; anchored later phases sit closer to their first phase
    again = synthesize_schedules(cfg, p)
    np.testing.assert_array_equal(res.weights, again.weights)
    ind = synthesize_schedules(SynthConfig(n=40, heldout=0, minimum=1e-3, phases=[0.8]), plan(SynthConfig(), base))
    anc = synthesize_schedules(SynthConfig(n=40, heldout=0, minimum=1e-3, phases=[0.8], phase_mode="anchored",
                                           anchor_strength=20.0), plan(SynthConfig(), base))
    gap = lambda r: np.abs(r.weights[:, 1] - r.weights[:, 0]).sum(axis=1).mean()  # noqa: E731
    assert gap(anc) < 0.5 * gap(ind)


@pytest.mark.parametrize("phases, says", [("1.2", "in (0, 1)"), ("0.8,0.5", "not increasing"), ("0", "in (0, 1)"),
                                          ("a", "not a number")])
def test_bad_boundaries_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, phases, says):
    skewed_base(tmp_path)
    assert main(["synthesize", str(tmp_path / "base.json"), "--out", str(tmp_path / "syn"), "--phases", phases]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "syn").exists()


def _mix(path, weights, valid=None):
    doc = {"version": 1, "domains": [{"name": n, "weight": w, "prefixes": [f"{n}/train"],
                                      **({"valid_prefixes": [valid]} if valid else {})} for n, w in weights.items()]}
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("case, says", [
    ("domains", "every phase must list the same domains"),
    ("order", "not after phases[0].fraction"),
    ("outside", "[0, 1)"),
    ("sum", "sum"),
    ("mixed", "use one kind"),
])
def test_bad_schedules_are_one_line_exit_2(tmp_path, capsys, case, says):
    _mix(tmp_path / "a.json", {"web": 0.5, "code": 0.5})
    _mix(tmp_path / "b.json", {"web": 0.5, "code": 0.5, **({"math": 0.0} if case == "domains" else {})})
    phases = [{"fraction": 0, "mixture": "a.json"}, {"fraction": 0.8, "mixture": "b.json"}]
    if case == "order":
        phases[1]["fraction"] = 0.0
    if case == "outside":
        phases[1]["fraction"] = 1.5
    if case == "sum":
        (tmp_path / "b.json").write_text(json.dumps({"version": 1, "normalize": False, "domains": [
            {"name": "web", "weight": 0.7, "prefixes": ["web/train"]}, {"name": "code", "weight": 0.7, "prefixes": ["code/train"]}]}))
    if case == "mixed":
        phases[1] = {"start": 10, "mixture": "b.json"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"phases": phases}))
    assert main(["export", str(tmp_path / "s.yaml"), "--format", "schedule", "--train-iters", "100",
                 "--out", str(tmp_path / "out.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.yaml").exists()


def test_fractional_schedule_needs_resolving_before_megatron(tmp_path):
    _mix(tmp_path / "a.json", {"web": 1.0})
    s = Schedule.from_dict({"phases": [{"fraction": 0, "mixture": "a.json"}, {"fraction": 0.5, "mixture": "a.json"}]},
                           tmp_path)
    with pytest.raises(ConfigError, match="resolve them"):
        s.megatron_args()
    with pytest.raises(ConfigError, match="leaves phase"):
        s.resolve(1)
