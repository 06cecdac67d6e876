"""Mixture synthesis: RegMix's sampler, its knobs, the rare-domain fixes, caps and the written files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from regmix_plugin.cli import main
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.mixture import Mixture
from regmix_plugin.data.indexed import idx_token_count
from regmix_plugin.data.token_counts import domain_token_counts
from regmix_plugin.synthesize.sampler import SynthConfig, coverage, sample_reference, synthesize
from sweep_helpers import DOMAINS, write_base

SKEWED = {"big": 1_000_000, "mid": 200_000, "small": 20_000, "rare": 2_000}


def skewed_base(tmp_path, tokens=SKEWED):
    doc = {"version": 1, "domains": [{"name": n, "weight": t, "prefixes": [f"{n}/train"], "tokens": t}
                                     for n, t in tokens.items()]}
    (tmp_path / "base.json").write_text(json.dumps(doc))
    return Mixture.load(tmp_path / "base.json")


def test_same_seed_same_mixtures_and_rows_are_distinct_rounded_and_sum_to_one(tmp_path):
    base = skewed_base(tmp_path)
    cfg = SynthConfig(n=40, heldout=5, seed=3, minimum=1e-3)
    a, b = synthesize(cfg, base), synthesize(cfg, base)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, synthesize(SynthConfig(n=40, heldout=5, seed=4, minimum=1e-3), base).weights)
    allw = np.vstack([a.weights, a.heldout])
    assert allw.shape == (45, 4)
    np.testing.assert_allclose(allw.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(allw * 1000, np.round(allw * 1000), atol=1e-9)  # multiples of `minimum`
    assert len({tuple(r) for r in allw}) == 45  # held-out mixtures are distinct from the training ones too


def test_max_usage_bound_and_token_caps_hold_for_every_mixture(tmp_path):
    base = skewed_base(tmp_path)
    share = np.array(list(SKEWED.values())) / sum(SKEWED.values())
    res = synthesize(SynthConfig(n=60, heldout=0, max_usage=3.0, minimum=1e-3), base)
    assert (res.weights <= np.minimum(1, 3.0 * share) + 1e-12).all()
    assert res.stats["rejected"] > 0

    # A large run of 2M tokens may repeat each domain at most twice: rare (2k tokens) gets <= 0.002.
    capped = synthesize(SynthConfig(n=30, heldout=0, max_usage=None, target_tokens=2_000_000, max_epochs=2.0,
                                    minimum=1e-4, temperature=1.0), base)
    caps = np.array(list(SKEWED.values())) * 2.0 / 2_000_000
    assert (capped.weights <= np.minimum(1, caps) + 1e-12).all()


def test_rare_domain_fixes_remove_collapse_to_zero(tmp_path):
    base = skewed_base(tmp_path)
    plain = synthesize(SynthConfig(n=80, heldout=0, minimum=1e-3), base)
    assert (plain.weights[:, 3] == 0).mean() > 0.5  # RegMix's weakness: the rare domain is usually 0
    nz = synthesize(SynthConfig(n=80, heldout=0, minimum=1e-3, nonzero=["rare"]), base)
    assert (nz.weights[:, 3] >= 1e-3).all()
    floor = synthesize(SynthConfig(n=80, heldout=0, minimum=1e-3, min_weight=0.02), base)
    assert (floor.weights >= 0.02 - 1e-12).all()


def test_sobol_sampler_is_deterministic_and_spreads_mixtures_at_least_as_well(tmp_path):
    base = skewed_base(tmp_path, {f"d{i}": 1000 for i in range(5)})
    ref = sample_reference(np.ones(5), 500)
    # Dir(1) (strength 5 x a flat prior over 5 domains): uniform on the simplex.
    kw = dict(n=128, heldout=0, minimum=1e-3, prior="uniform", temperature=1.0, min_strength=5.0,
              max_strength=5.0, max_usage=None)
    fills = {}
    for sampler in ("dirichlet", "sobol"):
        vals = []
        for seed in range(3):
            res = synthesize(SynthConfig(sampler=sampler, seed=seed, **kw), base)
            vals.append(coverage(res.weights, ref)["fill_mean"])
        fills[sampler] = np.median(vals)
    sob = SynthConfig(sampler="sobol", seed=0, **kw)
    np.testing.assert_array_equal(synthesize(sob, base).weights, synthesize(sob, base).weights)
    assert fills["sobol"] <= fills["dirichlet"]


def test_prior_from_idx_files_and_bad_settings_give_one_line_errors(tmp_path):
    # A real Megatron index header: magic, version, dtype code, sequence count, document count, lengths.
    for name, lengths in (("a", [5, 7, 9]), ("b", [100])):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "train.idx", "wb") as f:
            f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8))
            f.write(struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(lengths) + 1))
            f.write(np.array(lengths, dtype=np.int32).tobytes())
    doc = {"version": 1, "domains": [{"name": n, "weight": 1, "prefixes": [f"{n}/train"]} for n in "ab"]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    mix = Mixture.load(tmp_path / "m.json")
    assert idx_token_count(str(tmp_path / "a" / "train")) == 21
    assert domain_token_counts(mix, "auto") == {"a": 21, "b": 100}

    with pytest.raises(ConfigError, match=r"synthesize.minimum: 1/0.003 is not an integer"):
        SynthConfig(minimum=0.003)
    with pytest.raises(ConfigError, match=r"synthesize.sampler: unknown value 'lhs'; choose one of dirichlet, sobol"):
        SynthConfig(sampler="lhs")
    with pytest.raises(ConfigError, match=r"synthesize.nonzero: 'nope' is not a domain"):
        synthesize(SynthConfig(nonzero=["nope"]), mix)
    with pytest.raises(ConfigError, match=r"caps sum to .* < 1"):
        synthesize(SynthConfig(max_usage=1.1, prior="uniform", temperature=1.0, target_tokens=10**6), mix)
    with pytest.raises(RegmixError, match="distinct mixtures passed"):
        synthesize(SynthConfig(n=50, heldout=0, minimum=0.1, max_candidates=60), mix)


def test_cli_writes_mixture_files_heldout_manifest_and_refuses_to_overwrite(tmp_path, capsys):
    base = write_base(tmp_path)
    out = tmp_path / "mixtures"
    args = ["synthesize", str(base), "--out", str(out), "--n", "5", "--heldout", "2", "--minimum", "0.001",
            "--nonzero", "math", "--sampler", "sobol"]
    assert main(args) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert files == ["heldout/h0001.json", "heldout/h0002.json", "manifest.json"] + [f"n000{i}.json" for i in range(1, 6)]
    mix = Mixture.load(out / "n0003.json", check_files=False)
    assert mix.names == list(DOMAINS) and mix.weight_of("math") >= 0.001
    assert mix.resolve(mix.domains[0].prefixes[0]) == str(tmp_path / "web" / "train")  # prefixes re-based
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["sampler"] == "sobol" and [e["split"] for e in man["mixtures"]].count("heldout") == 2
    assert (out / "weights.csv").read_text().startswith("run_id,status,split,weight/web")
    assert main(args) == 2
    assert "already holds mixtures" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "9"]) == 0
