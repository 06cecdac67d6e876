"""Repetition-matched proxies: document subsets, the fractions, the study key, and the epochs the blend reads."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from regmix_plugin.cli import main
from regmix_plugin.data.blend import BlendConfig, build_datasets
from regmix_plugin.data.indexed import index_stats, open_indexed
from regmix_plugin.data.subsample import choose_documents, subsample_documents
from regmix_plugin.errors import ConfigError
from regmix_plugin.mixture import Mixture
from regmix_plugin.synthesize.repetition import AUTO_MATCHES, RepetitionConfig, build_plan, fractions, resolve_budgets
from regmix_plugin.sweep.study import DEFAULT_COMMAND
from data_helpers import make_tiny_corpus
from proxy_helpers import TINY_CONFIG


def _documents(prefix: str) -> list[tuple[int, ...]]:
    ds = open_indexed(prefix, mmap=False)
    return [tuple(int(t) for t in ds[i]) for i in range(len(ds))]


def test_choose_documents_is_seeded_random_and_closest_to_the_share():
    tokens = np.arange(1, 101)  # 100 documents of 1..100 tokens: 5050 in all
    a = choose_documents(tokens, 0.25, seed=1)
    assert np.array_equal(a, choose_documents(tokens, 0.25, seed=1))
    assert not np.array_equal(a, choose_documents(tokens, 0.25, seed=2))
    assert np.all(np.diff(a) > 0) and abs(tokens[a].sum() - 0.25 * 5050) <= 100  # within one document
    assert a.max() > 50  # a random subset, not the first quarter of the file
    assert len(choose_documents(tokens, 1e-6, seed=0)) == 1  # at least one document
    assert np.array_equal(choose_documents(tokens, 1.0, seed=0), np.arange(100))


def test_subsample_keeps_whole_source_documents_in_a_prefix_megatron_reads(tmp_path):
    corpus, natural = make_tiny_corpus(tmp_path, domains=1, docs_per_domain=120)
    src = str(corpus / "d0" / "train")
    st = subsample_documents(src, str(tmp_path / "sub"), 0.25, seed=3)
    assert st.kept_documents < st.documents and abs(st.kept_tokens / st.tokens - 0.25) < 0.05
    stats = index_stats(str(tmp_path / "sub"))
    assert (stats.tokens, stats.documents) == (st.kept_tokens, st.kept_documents)
    source_docs = _documents(src)
    kept = _documents(str(tmp_path / "sub"))
    positions = [source_docs.index(d) for d in kept]
    assert positions == sorted(positions)  # whole documents, in the source's order


def test_fractions_only_shrink_domains_the_target_can_repeat():
    f = fractions({"small": 1_000, "big": 50_000}, target_tokens=10_000, proxy_tokens=2_500)
    assert f == {"small": 0.25, "big": 1.0}
    assert fractions({"small": 1_000}, target_tokens=10_000, proxy_tokens=20_000) == {"small": 1.0}


def test_budgets_from_the_config_the_command_and_the_study():
    cfg = RepetitionConfig(match=True, target_tokens=1e6)
    # proxy-tiny-cpu.yaml: 100 steps x 8 x 128; the command's own --set overrides win.
    assert resolve_budgets(cfg, None, TINY_CONFIG, DEFAULT_COMMAND) == (1e6, 100 * 8 * 128)
    cmd = DEFAULT_COMMAND + " --set train.steps=10 --set model.seq_length=32 --set train.seed=3"
    assert resolve_budgets(cfg, None, TINY_CONFIG, cmd) == (1e6, 10 * 8 * 32)
    assert resolve_budgets(RepetitionConfig(match=True), 2e6, TINY_CONFIG, DEFAULT_COMMAND)[0] == 2e6
    assert resolve_budgets(RepetitionConfig(match=False, target_tokens=1e6), None, TINY_CONFIG, cmd) is None
    # The one key that switches it on: repetition.target_tokens. Without it, a study that knows the budget
    # from synthesize.target_tokens gets the measured default.
    assert resolve_budgets(RepetitionConfig(target_tokens=1e6), None, TINY_CONFIG, cmd) == (1e6, 10 * 8 * 32)
    assert resolve_budgets(RepetitionConfig(), None, TINY_CONFIG, cmd) is None
    assert (resolve_budgets(RepetitionConfig(), 2e6, TINY_CONFIG, cmd) is not None) == AUTO_MATCHES
    with pytest.raises(ConfigError, match=r"^repetition.target_tokens: matching needs"):
        resolve_budgets(RepetitionConfig(match=True), None, TINY_CONFIG, DEFAULT_COMMAND)
    with pytest.raises(ConfigError, match=r"^repetition.proxy_tokens: .* is not a regmix proxy config"):
        resolve_budgets(cfg, None, TINY_CONFIG.parent / "study-tiny-cpu.yaml", DEFAULT_COMMAND)
    with pytest.raises(ConfigError, match=r"^repetition.match: expected true, false or auto"):
        RepetitionConfig(match="yes")
    with pytest.raises(ConfigError, match=r"^repetition.target_tokens: expected a positive token count"):
        RepetitionConfig.from_dict({"target_tokens": -5})
    with pytest.raises(ConfigError, match=r"^repetition.epochs: unknown key"):
        RepetitionConfig.from_dict({"epochs": 2})


def test_matched_blend_repeats_each_domain_as_often_as_the_target(tmp_path):
    """The proxy's train blend, built by megatron-core from the subsets, reads each small domain as many
    times as the target run's blend reads the whole domain, at the same weights."""
    corpus, natural = make_tiny_corpus(tmp_path, domains=2, docs_per_domain=200, doc_len=(40, 120))
    base = Mixture.load(natural)
    mix = Mixture.from_weights({"d0": 0.7, "d1": 0.3}, template=base, name="m")
    seq, target_samples, proxy_samples = 32, 4096, 512  # the proxy reads 1/8 of the target's tokens
    plan = build_plan(base, target_samples * seq, proxy_samples * seq, seed=0, out=tmp_path / "out")
    matched = plan.apply(mix)
    assert matched.domains[0].valid_prefixes == mix.domains[0].valid_prefixes  # the split is untouched

    def epochs(m: Mixture, samples: int) -> np.ndarray:
        ds = build_datasets(m, BlendConfig(seq_length=seq, train_samples=samples, valid_samples_per_domain=4))
        read = np.array([ds.train_counts()[n] * seq for n in m.names], dtype=float)
        return read / np.array([index_stats(m.resolve(d.prefixes[0])).tokens for d in m.domains])

    target, plain, proxy = epochs(mix, target_samples), epochs(mix, proxy_samples), epochs(matched, proxy_samples)
    assert (target > 2).all()  # the target repeats both domains ...
    assert (plain < 1).all()  # ... a proxy on the whole domains never does ...
    np.testing.assert_allclose(proxy, target, rtol=0.1)  # ... and a matched one as often as the target


def test_study_key_points_every_run_at_the_subsets_once(tmp_path, capsys):
    _, natural = make_tiny_corpus(tmp_path, domains=3, docs_per_domain=60)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "rep", "base_mixture": str(natural), "proxy_config": str(TINY_CONFIG),
        "synthesize": {"n": 3, "heldout": 1, "seed": 0, "minimum": 0.001},
        "repetition": {"target_tokens": 204800},  # 2x the tiny proxy's 100 x 8 x 128 tokens
        "out": "out", "command": DEFAULT_COMMAND,
    }))
    assert main(["sweep", str(study), "--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert "repetition matching: target 2.048e+05 tokens, proxy 1.024e+05 (1/2)" in out
    runs = sorted((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 4
    base = Mixture.load(natural)
    for r in runs:
        m = Mixture.load(r / "mixture.json", check_files=True)
        assert all("/repetition/" in d.prefixes[0] for d in m.domains)
        assert [d.valid_prefixes for d in m.rebased(base.base_dir).domains] == [d.valid_prefixes for d in base.domains]
        assert m.provenance["repetition"]["fractions"]["d0"] == pytest.approx(0.5, abs=0.05)
    folders = list((tmp_path / "out" / "repetition").iterdir())
    assert len(folders) == 1
    # A rerun finds the same subsets and the same run mixtures (no "changed since" error).
    assert main(["sweep", str(study), "--prepare-only"]) == 0
    assert list((tmp_path / "out" / "repetition").iterdir()) == folders

    bad = yaml.safe_load(study.read_text())
    bad["repetition"] = {"match": True}
    bad.pop("synthesize")
    bad["mixtures"] = str(tmp_path / "out" / "mixtures")
    study.write_text(yaml.safe_dump(bad))
    capsys.readouterr()
    assert main(["sweep", str(study), "--prepare-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: repetition.target_tokens: matching needs") and err.count("\n") == 1


def test_a_corrupt_repetition_manifest_is_one_line_naming_the_folder_to_delete(tmp_path):
    corpus, natural = make_tiny_corpus(tmp_path, domains=2, docs_per_domain=200, doc_len=(40, 120))
    base = Mixture.load(natural)
    plan = build_plan(base, 4096 * 32, 512 * 32, seed=0, out=tmp_path / "out")
    manifest = plan.folder / "repetition.json"
    manifest.write_text('{"subsets": {')  # a partial write by hand or a full disk
    with pytest.raises(ConfigError, match=r"^.*repetition\.json: not a readable repetition manifest .*; delete ") as e:
        build_plan(base, 4096 * 32, 512 * 32, seed=0, out=tmp_path / "out")
    assert "\n" not in str(e.value) and str(plan.folder) in str(e.value)
