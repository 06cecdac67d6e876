"""One small sweep (two mixtures) with the real proxy trainer (`regmix train`) on a tiny real corpus, collected into a table."""

from __future__ import annotations

import math

import yaml

from regmix_plugin.cli import main
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.sweep.study import DEFAULT_COMMAND
from data_helpers import make_tiny_corpus
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG


def test_sweep_of_two_mixtures_with_the_built_in_trainer(tmp_path):
    _, natural = make_tiny_corpus(tmp_path, domains=3)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "real",
        "base_mixture": str(natural),
        "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 2, "heldout": 0, "seed": 0, "minimum": 0.001, "nonzero": "all"},
        "out": "out",
        "command": DEFAULT_COMMAND + "".join(f" --set {o}" for o in TEST_OVERRIDES if "tensorboard" not in o),
        "env": {"OMP_NUM_THREADS": "1"},
        "local": {"max_concurrent": 2},
    }))
    assert main(["sweep", str(study), "--no-progress"]) == 0

    df, warnings = collect([tmp_path / "out"])
    assert warnings == []
    assert sorted(df["run_id"]) == ["n0001", "n0002"] and (df["status"] == "completed").all()
    names = [c[len("weight/"):] for c in df.columns if c.startswith("weight/")]
    assert names == ["d0", "d1", "d2"]
    assert (df["step"] == 12).all() and (df["tokens"] > 0).all()
    for name in names:
        assert all(math.isfinite(x) for x in df[f"valid/{name}/loss"])
    # Different mixtures trained different models: their per-domain losses differ.
    assert df["valid/d0/loss"].nunique() == 2
