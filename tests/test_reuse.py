"""Mixture reuse (Olmix): the plan, the two maps, the reduced runs table, and the whole loop on a tiny real corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix_plugin.cli import main
from regmix_plugin.mixture import Mixture
from regmix_plugin.reuse.plan import make_plan
from regmix_plugin.reuse_plan import ReuseError, load_plan
from regmix_plugin.reuse.runs import reduce_runs
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.sweep.study import DEFAULT_COMMAND
from regmix_plugin.table import read_runs, write_runs
from data_helpers import make_tiny_corpus
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG

OLD = {"d0": 0.5, "d1": 0.3, "d2": 0.2}  # the mixture chosen before d3 arrived


def _old_mixture(natural, tmp_path, weights=OLD):
    """An 'optimized' regmix.json over the first three domains of the corpus."""
    nat = Mixture.load(natural)
    old = Mixture.from_weights(weights, template=nat, name="old-opt",
                               provenance={"tool": "regmix optimize", "predictor": "eff-law", "n_runs": 32})
    path = tmp_path / "old_regmix.json"
    old.save(path)
    return Mixture.load(path), path


@pytest.fixture
def corpus(tmp_path):
    return make_tiny_corpus(tmp_path, domains=4, docs_per_domain=60)


def test_plan_freezes_the_untouched_ratios_and_the_maps_invert_each_other(tmp_path, corpus):
    corpus_dir, natural = corpus
    old, old_path = _old_mixture(natural, tmp_path)
    plan, full, reduced = make_plan(old, old_path, base=Mixture.load(natural), update={"d2": None})
    assert plan.added == ["d3"] and plan.updated == ["d2"] and plan.removed == []
    assert plan.frozen == pytest.approx({"d0": 0.5 / 0.8, "d1": 0.3 / 0.8})
    assert plan.reduced_names == ["frozen", "d2", "d3"] and reduced.names == plan.reduced_names
    assert full.names == ["d0", "d1", "d2", "d3"]
    # The frozen group runs out when its first member does: min over members of tokens / ratio.
    tokens = {d.name: d.tokens for d in full.domains}
    assert reduced.domains[0].tokens == int(min(tokens["d0"] / (0.5 / 0.8), tokens["d1"] / (0.3 / 0.8)))
    assert sorted(reduced.domains[0].prefixes) == sorted(full.domains[0].prefixes + full.domains[1].prefixes)
    plan.save(tmp_path / "plan")
    full.save(tmp_path / "plan" / "full_base.json")
    reduced.save(tmp_path / "plan" / "base.json")
    plan = load_plan(tmp_path / "plan")

    r = Mixture.from_weights({"frozen": 0.6, "d2": 0.1, "d3": 0.3}, template=plan.reduced_base(), name="r")
    expanded = plan.expand(r)
    assert expanded.names == ["d0", "d1", "d2", "d3"]
    assert dict(zip(expanded.names, expanded.weights)) == pytest.approx(
        {"d0": 0.6 * 0.625, "d1": 0.6 * 0.375, "d2": 0.1, "d3": 0.3})
    assert expanded.domains[3].valid_prefixes  # held-out sets come along from the full base
    back, why = plan.reduce(dict(zip(expanded.names, expanded.weights)), old=False)
    assert why == "" and back == pytest.approx({"frozen": 0.6, "d2": 0.1, "d3": 0.3})

    # Old runs: valid only on the reduced face, with no weight on the updated domain's old data.
    assert plan.reduce({"d0": 0.5, "d1": 0.3, "d2": 0.2}, old=True)[0] is None  # d2's old data
    ok, _ = plan.reduce({"d0": 0.625, "d1": 0.375, "d2": 0.0}, old=True)
    assert ok == pytest.approx({"frozen": 1.0, "d2": 0.0, "d3": 0.0})
    off, why = plan.reduce({"d0": 0.7, "d1": 0.3, "d2": 0.0}, old=True)
    assert off is None and "frozen ratios" in why


def test_plan_errors_name_the_flag(tmp_path, corpus):
    _, natural = corpus
    old, old_path = _old_mixture(natural, tmp_path)
    with pytest.raises(ReuseError, match=r"^--add d0: the old mixture already has it"):
        make_plan(old, old_path, add={"d0": [str(tmp_path / "corpus" / "d3" / "train")]})
    with pytest.raises(ReuseError, match=r"^--update nope: not a domain"):
        make_plan(old, old_path, update={"nope": None})
    with pytest.raises(ReuseError, match=r"^--add/--update: nothing to re-search"):
        make_plan(old, old_path, remove=["d2"])
    with pytest.raises(ReuseError, match=r"^--frozen-name d3: a domain is already called that"):
        make_plan(old, old_path, base=Mixture.load(natural), frozen_name="d3")
    with pytest.raises(ReuseError, match=r"^--add d9: cannot count the tokens"):
        make_plan(old, old_path, add={"d9": [str(tmp_path / "missing")]})


def test_reduced_runs_keep_new_runs_and_only_valid_old_ones(tmp_path, corpus):
    _, natural = corpus
    old, old_path = _old_mixture(natural, tmp_path)
    plan, full, reduced = make_plan(old, old_path, base=Mixture.load(natural))
    new = pd.DataFrame({"run_id": ["n0001", "n0002"], "status": "completed",
                        "weight/d0": [0.5, 0.25], "weight/d1": [0.3, 0.15], "weight/d2": [0.2, 0.1],
                        "weight/d3": [0.0, 0.5], "valid/d0/loss": [3.0, 3.1], "valid/d3/loss": [3.5, 3.2],
                        "tokens": 1536})
    old_runs = pd.DataFrame({"run_id": ["n0001", "n0002", "n0003", "n0004"], "status": "completed",
                             "weight/d0": [0.5, 0.2, 0.5, 0.5], "weight/d1": [0.3, 0.5, 0.3, 0.3],
                             "weight/d2": [0.2, 0.3, 0.2, 0.2], "valid/d0/loss": [3.0, 3.3, 3.05, 3.0],
                             "tokens": [1536, 1536, 1536, 3072]})
    df, report = reduce_runs(plan, new, old_runs)
    # n0001 and n0003 are the old optimum itself (two seeds, say): on the face. n0002 is a swarm mixture off
    # the frozen ratios; n0004 is the optimum at twice the proxy's tokens.
    assert list(df["run_id"]) == ["n0001", "n0002", "old-n0001", "old-n0003"]
    assert list(df["source"]) == ["reuse:new"] * 2 + ["reuse:old"] * 2
    assert [c for c in df.columns if c.startswith("weight/")] == ["weight/frozen", "weight/d3"]
    np.testing.assert_allclose(df["weight/frozen"], [1.0, 0.5, 1.0, 1.0])
    assert math.isnan(df.loc[2, "valid/d3/loss"])  # an old run never saw d3
    text = "\n".join(report)
    assert "2 of 4 old runs reused" in text and "frozen ratios" in text and "3072 tokens" in text
    assert "have no valid/d3/loss" in text

    bad = new.copy()
    bad.loc[0, "weight/d0"] = 0.4
    bad.loc[0, "weight/d3"] = 0.1
    with pytest.raises(ReuseError, match="run n0001 its untouched domains are not in the frozen ratios"):
        reduce_runs(plan, bad)


def test_cli_errors_are_one_line_exit_2(tmp_path, corpus, capsys):
    _, natural = corpus
    _, old_path = _old_mixture(natural, tmp_path)
    assert main(["reuse", "plan", str(old_path), "--add", "d9", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: --add 'd9': expected NAME=PREFIX") and err.count("\n") == 1
    assert main(["reuse", "plan", str(old_path), "--base", str(natural), "--out", str(tmp_path / "p")]) == 0
    assert main(["reuse", "plan", str(old_path), "--base", str(natural), "--out", str(tmp_path / "p")]) == 0  # same
    before = (tmp_path / "p" / "plan.json").read_text()
    capsys.readouterr()
    assert main(["reuse", "plan", str(old_path), "--base", str(natural), "--update", "d0", "--out",
                 str(tmp_path / "p")]) == 2
    assert "already holds a different reuse plan" in capsys.readouterr().err
    assert (tmp_path / "p" / "plan.json").read_text() == before
    assert main(["reuse", "expand", str(tmp_path / "nowhere"), str(old_path), "--out", str(tmp_path / "x.json")]) == 2
    assert "reuse plan not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_reuse_loop_with_the_built_in_trainer(tmp_path, corpus, capsys):
    """plan -> reduced study -> sweep (runs get full mixtures) -> collect -> reuse runs -> fit -> optimize ->
    expand, every stage the CLI, the proxies the real trainer on a tiny real corpus."""
    corpus_dir, natural = corpus
    _, old_path = _old_mixture(natural, tmp_path)
    old_runs = tmp_path / "old_runs.csv"
    write_runs(pd.DataFrame({"run_id": ["n0001", "n0002"], "status": "completed", "weight/d0": [0.5, 0.2],
                             "weight/d1": [0.3, 0.5], "weight/d2": [0.2, 0.3], "valid/d0/loss": [3.0, 3.3]}),
               old_runs)
    template = tmp_path / "old_study.yaml"
    template.write_text(yaml.safe_dump({
        "name": "old", "base_mixture": str(natural), "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 32, "seed": 0, "minimum": 0.001, "nonzero": ["d0"]}, "out": "old_out",
        "command": DEFAULT_COMMAND + "".join(f" --set {o}" for o in TEST_OVERRIDES if "tensorboard" not in o),
        "env": {"OMP_NUM_THREADS": "1"}, "local": {"max_concurrent": 2},
    }))
    plan_dir = tmp_path / "reuse"
    d3 = corpus_dir / "d3"
    assert main(["reuse", "plan", str(old_path), "--add", f"d3={d3 / 'train'}", "--valid", f"d3={d3 / 'valid'}",
                 "--old-runs", str(old_runs), "--study", str(template), "--n", "4", "--out", str(plan_dir)]) == 0
    out = capsys.readouterr().out
    assert "frozen = d0 0.500, d1 0.300, d2 0.200" in out and "search over frozen, d3" in out
    study = yaml.safe_load((plan_dir / "study.yaml").read_text())
    assert study["reuse"] == "plan.json" and study["synthesize"]["n"] == 4 and "nonzero" not in study["synthesize"]

    assert main(["sweep", str(plan_dir / "study.yaml"), "--no-progress"]) == 0
    run = Mixture.load(plan_dir / "sweep" / "runs" / "n0001" / "mixture.json")
    assert run.names == ["d0", "d1", "d2", "d3"]  # the trainer saw every real domain
    red = run.provenance["reuse"]["reduced_weights"]
    w = dict(zip(run.names, run.weights))
    assert w["d0"] / w["d1"] == pytest.approx(0.5 / 0.3) and w["d3"] == pytest.approx(red["d3"])

    df, warnings = collect([plan_dir / "sweep"])
    assert warnings == [] and (df["status"] == "completed").all()
    write_runs(df, tmp_path / "new_runs.csv")
    assert main(["reuse", "runs", str(plan_dir), "--runs", str(tmp_path / "new_runs.csv"),
                 "--out", str(tmp_path / "reduced.csv")]) == 0
    text = capsys.readouterr().out
    assert "1 of 2 old runs reused" in text and "1 left out: its untouched domains are not in the frozen ratios" in text
    reduced = read_runs(tmp_path / "reduced.csv")
    assert [c for c in reduced.columns if c.startswith("weight/")] == ["weight/frozen", "weight/d3"]
    assert all(f"valid/{d}/loss" in reduced.columns for d in ("d0", "d1", "d2", "d3"))

    assert main(["fit", "--runs", str(tmp_path / "reduced.csv"), "--target", "mean(valid/*/loss)",
                 "--predictor", "linear", "--folds", "2", "--out", str(tmp_path / "model")]) == 0
    assert main(["optimize", "--model", str(tmp_path / "model"), "--base-mixture", str(plan_dir / "base.json"),
                 "--out", str(tmp_path / "reduced_regmix.json")]) == 0
    assert main(["reuse", "expand", str(plan_dir), str(tmp_path / "reduced_regmix.json"),
                 "--out", str(tmp_path / "regmix.json")]) == 0
    final = Mixture.load(tmp_path / "regmix.json", check_files=True)
    r = Mixture.load(tmp_path / "reduced_regmix.json")
    fw = dict(zip(final.names, final.weights))
    assert final.names == ["d0", "d1", "d2", "d3"]
    assert fw["d3"] == pytest.approx(r.weight_of("d3"))
    assert fw["d0"] == pytest.approx(r.weight_of("frozen") * 0.5)
    prov = final.provenance["reuse"]
    assert prov["frozen"] == pytest.approx({"d0": 0.5, "d1": 0.3, "d2": 0.2}) and prov["added"] == ["d3"]
    assert prov["old_mixture"]["path"] == str(old_path.resolve())
    assert prov["old_mixture"]["provenance"]["predictor"] == "eff-law"
    assert prov["old_runs"]["path"] == str(old_runs.resolve()) and prov["old_runs"]["rows"] == 2
    assert final.provenance["reduced_mixture"]["provenance"]["tool"] == "regmix optimize"
    assert json.loads((tmp_path / "regmix.json").read_text())["provenance"]["tool"] == "regmix reuse expand"


def test_reuse_study_refuses_a_base_that_is_not_the_plans(tmp_path, corpus, capsys):
    corpus_dir, natural = corpus
    _, old_path = _old_mixture(natural, tmp_path)
    assert main(["reuse", "plan", str(old_path), "--base", str(natural), "--out", str(tmp_path / "p")]) == 0
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base_mixture": str(natural), "reuse": "p/plan.json",
                                     "synthesize": {"n": 2, "minimum": 0.001}, "command": "true {mixture}"}))
    capsys.readouterr()
    assert main(["sweep", str(study), "--prepare-only"]) == 2
    assert "but the reuse plan searches frozen, d3; use the plan's base.json" in capsys.readouterr().err


def test_reuse_study_with_repetition_matching_subsamples_the_real_domains(tmp_path, corpus):
    """The two study keys together: runs get the expanded mixture, each real domain cut to its subset."""
    corpus_dir, natural = corpus
    _, old_path = _old_mixture(natural, tmp_path)
    template = tmp_path / "old_study.yaml"
    template.write_text(yaml.safe_dump({
        "name": "old", "base_mixture": str(natural), "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 8, "minimum": 0.001}, "repetition": {"target_tokens": 409600},  # 4x the proxy's
    }))
    assert main(["reuse", "plan", str(old_path), "--base", str(natural), "--study", str(template), "--n", "2",
                 "--out", str(tmp_path / "p")]) == 0
    assert main(["sweep", str(tmp_path / "p" / "study.yaml"), "--prepare-only"]) == 0
    run = Mixture.load(tmp_path / "p" / "sweep" / "runs" / "n0001" / "mixture.json", check_files=True)
    assert run.names == ["d0", "d1", "d2", "d3"]
    assert all("/repetition/" in d.prefixes[0] for d in run.domains)
    assert run.provenance["repetition"]["fractions"]["d3"] == pytest.approx(0.25, abs=0.05)
    assert set(run.provenance["reuse"]["reduced_weights"]) == {"frozen", "d3"}
