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
        (tmp_path / "b.json").write_text(json.dumps({"version": 1, "domains": [
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


# ---- sweep and collect ----------------------------------------------------------------------------
def test_sweep_trains_synthesized_schedules_with_the_built_in_trainer_and_collects_per_phase_columns(tmp_path):
    from data_helpers import make_tiny_corpus
    from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG

    from regmix_plugin.collect.runs_table import collect
    from regmix_plugin.sweep.study import SCHEDULE_COMMAND

    _, natural = make_tiny_corpus(tmp_path, domains=3)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "phased",
        "base_mixture": str(natural),
        "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 2, "heldout": 0, "seed": 0, "minimum": 0.001, "nonzero": "all", "phases": [0.5]},
        "out": "out",
        "command": SCHEDULE_COMMAND + "".join(f" --set {o}" for o in TEST_OVERRIDES if "tensorboard" not in o),
        "env": {"OMP_NUM_THREADS": "1"},
        "local": {"max_concurrent": 2},
    }))
    assert main(["sweep", str(study), "--no-progress"]) == 0
    run = tmp_path / "out" / "runs" / "n0001"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert [p["start"] for p in cfg["run"]["schedule"]] == [0, 6]  # 0.5 of the proxy's 12 steps
    df, warnings = collect([tmp_path / "out"])
    assert warnings == [], warnings
    assert list(df.columns[3:10]) == [*(f"weight/p{k}/d{i}" for k in (0, 1) for i in range(3)), "phase/p1/start"]
    assert (df["status"] == "completed").all() and (df["phase/p1/start"] == 0.5).all()
    assert df[[f"weight/p1/d{i}" for i in range(3)]].sum(axis=1).round(9).eq(1).all()
    assert df["valid/d0/loss"].notna().all()
    # a schedule run made by `regmix train --schedule` alone (no sweep): its config.yaml names the phases
    import shutil

    plain = tmp_path / "plain" / "n0001"
    shutil.copytree(run, plain)
    (plain / "schedule" / "schedule.yaml").unlink()
    (plain / "status.json").unlink()
    alone, warnings = collect([plain])
    assert warnings == [] and alone["phase/p1/start"].tolist() == [0.5]
    assert alone.filter(like="weight/p1/").to_numpy().tolist() == df[df.run_id == "n0001"].filter(like="weight/p1/").to_numpy().tolist()


def test_collect_imports_marin_phase_columns(tmp_path, capsys):
    rows = pd.DataFrame({"run_name": ["a", "b"], "phase_0_web": [0.6, 0.3], "phase_0_code": [0.4, 0.7],
                         "phase_1_code": [0.5, 0.1], "phase_1_web": [0.5, 0.9], "eval/bpb": [1.1, 1.2]})
    rows.to_csv(tmp_path / "swarm.csv", index=False)
    assert main(["collect", "--marin", str(tmp_path / "swarm.csv"), "--phases", "0.8", "--out", str(tmp_path / "r.csv")]) == 0
    df = pd.read_csv(tmp_path / "r.csv")
    assert list(df.columns) == ["run_id", "status", "weight/p0/web", "weight/p0/code", "weight/p1/web",
                                "weight/p1/code", "phase/p1/start", "eval/bpb"]
    assert df["weight/p1/web"].tolist() == [0.5, 0.9] and (df["phase/p1/start"] == 0.8).all()
    # a phase missing a domain, or a bad boundary: one line, exit 2, nothing written
    rows.drop(columns=["phase_1_web"]).to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    for argv in (["--marin", str(tmp_path / "bad.csv")], ["--marin", str(tmp_path / "swarm.csv"), "--phases", "1.5"]):
        assert main(["collect", *argv, "--out", str(tmp_path / "bad_out.csv")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "bad_out.csv").exists()


# ---- fit ------------------------------------------------------------------------------------------
def schedule_runs(n: int = 60, seed: int = 0, a1: float = 4.0, D: int = 4, noise: float = 0.002) -> pd.DataFrame:
    """A schedule runs table (phases at 0 and 0.8) whose loss follows the effective-exposure law with a late
    phase that counts ``a1`` times as much as the first: the phase split carries signal."""
    rng = np.random.default_rng(seed)
    X0, X1 = rng.dirichlet(np.ones(D), n), rng.dirichlet(np.ones(D), n)
    s = np.array([8.0, 2.0, 0.5, 0.1])[:D]
    E = 0.8 * X0 + a1 * 0.2 * X1
    y = 2.0 + 1.5 * (1 + ((E + 1e-4) ** 0.5) @ s) ** -0.7 + noise * rng.normal(size=n)
    df = pd.DataFrame({"run_id": [f"r{i:03d}" for i in range(n)], "status": "completed"})
    names = ["web", "code", "books", "math"][:D]
    for k, Xk in enumerate((X0, X1)):
        for j, d in enumerate(names):
            df[f"weight/p{k}/{d}"] = Xk[:, j]
    df["phase/p1/start"] = 0.8
    df["valid/web/loss"] = y
    return df


def test_phase_law_recovers_the_late_phase_importance_and_beats_the_averaged_exposure_control(tmp_path):
    from regmix_plugin.fit.model import FitConfig, fit_model

    df = schedule_runs()
    m = fit_model(df, "valid/web/loss", FitConfig(predictor="phase-law", params={"n_starts": 2}))
    assert m.phases["lengths"] == pytest.approx([0.8, 0.2]) and m.domains[:2] == ["p0/web", "p0/code"]
    assert m.predictor.importance_[1] == pytest.approx(4.0, rel=0.25)
    rows = {r["predictor"]: r for r in m.cv}
    assert set(rows) == {"phase-law", "averaged-exposure"}  # the control is reported beside every fit
    assert rows["phase-law"]["spearman"] > rows["averaged-exposure"]["spearman"] + 0.05
    # saved and loaded, the model keeps its phases and predicts the same
    m.save(tmp_path / "model")
    from regmix_plugin.fit.model import FittedModel

    back = FittedModel.load(tmp_path / "model")
    assert back.phases["starts"] == [0.0, 0.8]
    X = df[[c for c in df.columns if c.startswith("weight/")]].to_numpy()
    np.testing.assert_allclose(back.predictor.predict(X[:5]), m.predictor.predict(X[:5]))
    # its analytic gradient agrees with finite differences
    x, h = X[0].copy(), 1e-6
    num = [(m.predictor.predict((x + h * e)[None])[0] - m.predictor.predict((x - h * e)[None])[0]) / (2 * h)
           for e in np.eye(len(x))]
    np.testing.assert_allclose(m.predictor.gradient(x), num, rtol=1e-4, atol=1e-7)


def test_auto_over_a_schedule_table_scores_the_phase_law_and_reports_the_control(tmp_path, capsys):
    schedule_runs(n=40).to_csv(tmp_path / "runs.csv", index=False)
    params = json.dumps({"candidates": ["linear", "eff-law", "phase-law"], "candidate_params": {"eff-law": {"n_starts": 1},
                                                                                  "phase-law": {"n_starts": 1}}})
    assert main(["fit", "--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--params", params,
                 "--folds", "3", "--out", str(tmp_path / "model"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "model" / "model.json").read_text())
    scored = {r["predictor"] for r in doc["cv"]}
    assert {"phase-law", "averaged-exposure", "linear", "eff-law"} <= scored
    rho = {r["predictor"]: r["spearman"] for r in doc["cv"]}
    assert doc["phases"]["starts"] == [0.0, 0.8] and rho["phase-law"] > rho["averaged-exposure"] + 5
    # eff-law over the concatenation can represent this law too (one s per phase and domain): they tie here
    assert doc["chosen"] in ("phase-law", "eff-law")


# ---- optimise -------------------------------------------------------------------------------------
def test_optimize_a_schedule_under_caps_with_the_gain_over_the_best_single_mixture(tmp_path, capsys):
    df = schedule_runs(n=60)
    df.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--predictor", "phase-law",
                 "--params", '{"n_starts": 1}', "--folds", "3", "--out", str(tmp_path / "model"), "--quiet"]) == 0
    # web may make up at most 30 % of the whole run's tokens; no phase may drop math entirely
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"target_tokens": 1000, "max_epochs": 1, "min": {"math": 0.02},
                                                     "tokens": {"web": 300, "code": 1000, "books": 1000, "math": 1000}}))
    out = tmp_path / "opt" / "schedule.yaml"
    assert main(["optimize", "--model", str(tmp_path / "model"), "--constraints", str(tmp_path / "c.yaml"),
                 "--samples", "2000", "--out", str(out)]) == 0
    sched = Schedule.load(out)
    assert sched.fractions() == [0.0, 0.8]
    mixes = [p.load() for p in sched.phases]
    W = np.array([m.weights for m in mixes])
    assert np.allclose(W.sum(axis=1), 1) and (W[:, 3] >= 0.02 - 1e-9).all()
    assert 0.8 * W[0, 0] + 0.2 * W[1, 0] <= 0.3 + 1e-6  # the token cap binds the exposure, not each phase
    assert W[1, 0] > 0.3  # the late phase, which counts 4x here, takes web beyond its share
    prov = mixes[0].provenance
    gain = prov["predicted_gain_over_best_single_mixture"]
    assert gain["predicted"] > 0 and gain["interval"]["lower"] < gain["predicted"] < gain["interval"]["upper"]
    assert prov["kind"] == "schedule" and prov["phase"] == 0 and mixes[1].provenance["phase"] == 1
    assert (tmp_path / "opt" / "schedule.png").stat().st_size > 1000
    # bad input: one line, exit 2, nothing written
    capsys.readouterr()
    (tmp_path / "pull.yaml").write_text(yaml.safe_dump({"prior_pull": {"kind": "kl", "strength": 0.1}}))
    for extra in (["--out", str(tmp_path / "x.json")], ["--constraints", str(tmp_path / "pull.yaml"), "--out",
                                                        str(tmp_path / "x" / "s.yaml")]):
        assert main(["optimize", "--model", str(tmp_path / "model"), *extra]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x").exists()


def test_optimize_a_schedule_with_a_tree_model_averages_feasible_samples(tmp_path):
    schedule_runs(n=60).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--predictor", "lightgbm",
                 "--params", '{"n_estimators": 40}', "--folds", "3", "--out", str(tmp_path / "model"), "--quiet"]) == 0
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"max": {"web": 0.5}}))
    out = tmp_path / "opt" / "schedule.yaml"
    assert main(["optimize", "--model", str(tmp_path / "model"), "--constraints", str(tmp_path / "c.yaml"),
                 "--samples", "3000", "--top-k", "32", "--out", str(out)]) == 0
    mixes = [p.load() for p in Schedule.load(out).phases]
    assert all(abs(sum(m.weights) - 1) < 1e-9 and m.weight_of("web") <= 0.5 + 1e-9 for m in mixes)
    assert mixes[0].provenance["search"]["method"] == "top-k average"


# ---- export ---------------------------------------------------------------------------------------
def test_export_a_schedule_for_megatron_and_bridge(tmp_path, capsys):
    _mix(tmp_path / "a.json", {"web": 0.75, "code": 0.25})
    _mix(tmp_path / "b.json", {"web": 0.25, "code": 0.75})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"phases": [{"fraction": 0, "mixture": "a.json"},
                                                                {"fraction": 0.8, "mixture": "b.json"}]}))
    s = str(tmp_path / "s.yaml")
    out = tmp_path / "run" / "S.yaml"
    out.parent.mkdir()
    assert main(["export", s, "--format", "schedule", "--train-iters", "1000", "--out", str(out)]) == 0
    resolved = Schedule.load(out)  # written elsewhere, its mixture paths still resolve
    assert [p.start for p in resolved.phases] == [0, 800] and resolved.phases[1].load().weights == [0.25, 0.75]
    capsys.readouterr()
    assert main(["export", s, "--format", "megatron-phases", "--train-iters", "1000", "--global-batch-size", "64"]) == 0
    text = capsys.readouterr().out
    assert "--train-samples 64000 --global-batch-size 64 --phase-transition-iterations 800" in text
    assert "phase 1 (iterations 800-999)" in text and f"0.25 {tmp_path}/web" in text
    assert main(["export", s, "--format", "bridge-phases", "--train-iters", "1000"]) == 0
    text = capsys.readouterr().out
    assert text.count("cfg.dataset.blend_per_split") == 2 and "phase 1: iterations 800-999" in text
    # the flag Megatron-LM reads: its own argument parser accepts it and turns it into iterations
    from megatron.training.arguments import add_megatron_arguments
    import argparse
    parsed = add_megatron_arguments(argparse.ArgumentParser()).parse_args(["--phase-transition-iterations", "800"])
    assert parsed.phase_transition_iterations == "800"
    capsys.readouterr()  # importing megatron may warn on stderr (no CUDA): not the command's output
    # without the run's length, or a mixture format of a schedule: one line, exit 2
    for argv in (["--format", "schedule"], ["--format", "megatron-phases", "--train-iters", "10"],
                 ["--format", "megatron-args"], ["--format", "schedule", "--train-iters", "1"]):
        assert main(["export", s, *argv, "--out", str(tmp_path / "x.txt")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "x.txt").exists()


def test_validate_a_schedule(tmp_path, capsys):
    _mix(tmp_path / "a.json", {"web": 0.5, "code": 0.5})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"phases": [{"fraction": 0, "mixture": "a.json"},
                                                                {"fraction": 0.8, "mixture": "a.json"}]}))
    assert main(["validate", str(tmp_path / "s.yaml")]) == 0
    assert "a schedule of 2 phases over 2 domains, beginning at fractions 0, 0.8" in capsys.readouterr().out


def test_megatron_takes_an_optimised_schedule_in_fractions_of_its_own_run(tmp_path):
    """`--data-schedule-from opt/schedule.yaml` as optimize writes it: the boundary resolves against the run's
    --train-samples / --global-batch-size, in the flag Megatron reads and in the phase each iteration trains."""
    import argparse

    from regmix_plugin.megatron.datasets import MixtureSource
    from regmix_plugin.megatron.launch import Kernels, prepare_launch

    _mix(tmp_path / "a.json", {"web": 1.0, "code": 0.0})
    _mix(tmp_path / "b.json", {"web": 0.0, "code": 1.0})
    s = tmp_path / "s.yaml"
    s.write_text(yaml.safe_dump({"phases": [{"fraction": 0, "mixture": "a.json"}, {"fraction": 0.75, "mixture": "b.json"}]}))
    argv = prepare_launch(["--train-samples", "64", "--global-batch-size", "4", "--data-schedule-from", str(s)],
                          environ={}, kernels=Kernels.of(te=True, apex=True)).argv
    assert argv[-2:] == ["--phase-transition-iterations", "12"]
    src = MixtureSource.from_args(argparse.Namespace(data_schedule_from=str(s), train_samples=64, global_batch_size=4))
    assert [src.mixture(i).weight_of("code") for i in (0, 11, 12, 15)] == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="resolve them"):
        prepare_launch(["--train-iters", "16", "--data-schedule-from", str(s)], environ={},
                       kernels=Kernels.of(te=True, apex=True))


def test_a_maximised_target_gets_the_same_schedule_as_its_negated_loss(tmp_path, capsys):
    df = schedule_runs(n=50)
    df["eval/acc"] = 10.0 - df["valid/web/loss"]  # higher is better
    df.to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"target_tokens": 1000, "max_epochs": 1,
                                                     "tokens": {"web": 300, "code": 1000, "books": 1000, "math": 1000}}))
    W = {}
    for target, flag in (("valid/web/loss", "--minimize"), ("eval/acc", "--maximize")):
        model, out = tmp_path / f"m-{flag}", tmp_path / f"o{flag}" / "s.yaml"
        # LightGBM's L2 boosting on -y is the mirror of its boosting on y: the same schedules must come out
        assert main(["fit", "--runs", str(tmp_path / "runs.csv"), "--target", target, flag, "--predictor", "lightgbm",
                     "--params", '{"n_estimators": 40}', "--folds", "3", "--out", str(model), "--quiet"]) == 0
        assert main(["optimize", "--model", str(model), "--constraints", str(tmp_path / "c.yaml"), "--samples", "2000",
                     "--out", str(out)]) == 0
        mixes = [p.load() for p in Schedule.load(out).phases]
        W[flag] = np.array([m.weights for m in mixes])
        assert mixes[0].provenance["predicted_gain_over_best_single_mixture"]["predicted"] >= 0
    np.testing.assert_allclose(W["--minimize"], W["--maximize"], atol=1e-6)
