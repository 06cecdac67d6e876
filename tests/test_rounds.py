"""Search rounds (issue 26): `regmix synthesize --around MODEL` draws the next round where the fitted model predicts
the best target, within the sampler's caps; `fit` takes the union of rounds. End to end on the CPU proxy trainer
with tiny settings, and the selection rule on a target whose best mixture is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from data_helpers import make_tiny_corpus
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG

from regmix_plugin.cli import main
from regmix_plugin.fit.model import FitConfig, FittedModel, fit_model
from regmix_plugin.mixture import Mixture
from regmix_plugin.sweep.study import DEFAULT_COMMAND
from regmix_plugin.synthesize.around import around
from regmix_plugin.synthesize.config import SynthConfig

SYNTH = ["--minimum", "0.001", "--nonzero", "all", "--seed", "3"]


def _study(path, natural, **where) -> None:
    path.write_text(yaml.safe_dump({
        "name": path.stem, "base_mixture": str(natural), "proxy_config": str(TINY_CONFIG), "out": f"out_{path.stem}",
        "command": DEFAULT_COMMAND + "".join(f" --set {o}" for o in TEST_OVERRIDES if "tensorboard" not in o),
        "env": {"OMP_NUM_THREADS": "1"}, "local": {"max_concurrent": 2}, **where}))


def test_two_rounds_end_to_end_on_the_cpu_trainer(tmp_path, capsys):
    _, natural = make_tiny_corpus(tmp_path, domains=3)
    _study(tmp_path / "round1.yaml", natural,
           synthesize={"n": 4, "heldout": 0, "seed": 0, "minimum": 0.001, "nonzero": "all"})
    assert main(["sweep", str(tmp_path / "round1.yaml"), "--no-progress"]) == 0
    assert main(["collect", str(tmp_path / "out_round1"), "--out", str(tmp_path / "r1.csv")]) == 0
    assert main(["fit", "--runs", str(tmp_path / "r1.csv"), "--target", "mean(valid/*/loss)", "--predictor", "gp",
                 "--folds", "2", "--quiet", "--out", str(tmp_path / "m1")]) == 0

    capsys.readouterr()
    assert main(["synthesize", str(natural), "--around", str(tmp_path / "m1"), "--n", "2", "--pool", "2000", "--explore", "0.5",
                 "--out", str(tmp_path / "round2"), *SYNTH]) == 0
    assert "2 mixtures of round 2 around" in capsys.readouterr().out
    man = json.loads((tmp_path / "round2" / "manifest.json").read_text())
    assert [e["run_id"] for e in man["mixtures"]] == ["r2_n0001", "r2_n0002"]
    first = Mixture.load(tmp_path / "round2" / "r2_n0001.json")
    assert first.provenance["why"] == "best predicted" and "predictive_std" in first.provenance
    assert Mixture.load(tmp_path / "round2" / "r2_n0002.json").provenance["why"] == "most uncertain near the top"
    assert min(first.weights) >= 0.001 - 1e-12  # the sampler's floor (nonzero: all, minimum) holds

    _study(tmp_path / "round2.yaml", natural, mixtures=str(tmp_path / "round2"))
    assert main(["sweep", str(tmp_path / "round2.yaml"), "--no-progress"]) == 0
    assert main(["collect", str(tmp_path / "out_round2"), "--out", str(tmp_path / "r2.csv")]) == 0
    assert main(["fit", "--runs", str(tmp_path / "r1.csv"), "--runs", str(tmp_path / "r2.csv"), "--target",
                 "mean(valid/*/loss)", "--predictor", "gp", "--folds", "3", "--quiet", "--out", str(tmp_path / "m2")]) == 0
    m2 = FittedModel.load(tmp_path / "m2")
    assert m2.n_runs == 6
    assert main(["optimize", "--model", str(tmp_path / "m2"), "--samples", "2000", "--top-k", "16",
                 "--out", str(tmp_path / "regmix.json")]) == 0


def _known_runs(n=30, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n)
    best = np.array([0.2, 0.2, 0.6])
    df = pd.DataFrame({"run_id": [f"n{i:04d}" for i in range(n)], "status": "completed"})
    for j, d in enumerate(("a", "b", "c")):
        df[f"weight/{d}"] = W[:, j]
    df["lmeval/x/acc"] = 0.7 - ((W - best) ** 2).sum(axis=1)
    return df, best


def test_around_draws_near_the_predicted_best_in_the_target_direction(tmp_path):
    df, best = _known_runs()
    base = Mixture.from_weights({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, prefixes={d: [d] for d in "abc"})
    cfg = SynthConfig.from_dict({"n": 4, "minimum": 0.001, "max_usage": None, "prior": "uniform"})
    up = fit_model(df, "lmeval/x/acc", FitConfig(predictor="gp", folds=3))
    r = around(up, cfg, base, 4, pool=4000)
    assert r.why[0] == "best predicted" and np.abs(r.weights[0] - best).sum() < 0.25
    assert r.weights.shape == (4, 3) and np.allclose(r.weights.sum(axis=1), 1)
    # Forced the wrong way, the same runs send the round elsewhere.
    down = fit_model(df, "lmeval/x/acc", FitConfig(predictor="gp", folds=3, direction="minimize"))
    assert np.abs(around(down, cfg, base, 4, pool=4000).weights[0] - best).sum() > 0.5


def test_union_of_rounds_and_bad_input(tmp_path, capsys):
    df, _ = _known_runs(8)
    df.iloc[:4].to_csv(tmp_path / "a.csv", index=False)
    df.iloc[4:].assign(run_id=df["run_id"].iloc[:4].to_numpy()).to_csv(tmp_path / "b.csv", index=False)  # ids clash
    from regmix_plugin.fit.model import load_runs_table

    u = load_runs_table([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    assert u["round"].tolist() == [1] * 4 + [2] * 4 and u["run_id"].is_unique and u["run_id"].iloc[4] == "r2_n0000"
    df.iloc[4:].rename(columns={"weight/c": "weight/z"}).to_csv(tmp_path / "c.csv", index=False)
    assert main(["fit", "--runs", str(tmp_path / "a.csv"), "--runs", str(tmp_path / "c.csv"), "--target",
                 "lmeval/x/acc", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "c.csv") in err and not (tmp_path / "m").exists()
    with pytest.raises(Exception, match="--pool"):
        around(fit_model(df, "lmeval/x/acc", FitConfig(predictor="linear", folds=2)), SynthConfig.from_dict({"prior": "uniform"}),
               Mixture.from_weights({"a": 0.3, "b": 0.3, "c": 0.4}, prefixes={d: [d] for d in "abc"}), 8, pool=10)
