"""build_datasets on real .bin/.idx corpora built in tmp_path with megatron-core's IndexedDatasetBuilder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import domain_of_token, make_tiny_corpus

from regmix_plugin.data.blend import (
    VALID_SOURCE_HELD_OUT,
    VALID_SOURCE_IN_SAMPLE,
    BlendConfig,
    build_datasets,
)
from regmix_plugin.data.tokenizer import TokenizerInfo, TokenizerMismatchError
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.mixture import Mixture, MixtureError

WEIGHTS = {"d0": 0.5, "d1": 0.3, "d2": 0.0, "d3": 0.2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return make_tiny_corpus(tmp_path_factory.mktemp("blend"), 4)


def _mix(natural: Path, weights: dict[str, float]) -> Mixture:
    return Mixture.from_weights(weights, template=Mixture.load(natural))


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _domains_in(tokens) -> set[int]:
    return {domain_of_token(int(t)) for t in tokens} - {None}


def test_train_counts_match_weights_exactly_to_rounding(corpus):
    _, natural = corpus
    n = 997
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=n))
    assert len(ds.train) == n
    counts = ds.train_counts()
    assert sum(counts.values()) == n
    for name, w in WEIGHTS.items():
        # megatron-core's greedy blending keeps every prefix of the order within one sample of its target.
        assert abs(counts[name] - w * n) <= 1, (name, counts[name], w * n)
        prefix_counts = np.bincount(ds.train.domain_ids[:100], minlength=4)
        assert abs(prefix_counts[int(name[1:])] - w * 100) <= 1
    assert counts["d2"] == 0


def test_every_sample_comes_from_its_own_domain(corpus):
    _, natural = corpus
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=32, train_samples=300))
    for i in range(len(ds.train)):
        item = ds.train[i]
        assert _domains_in(item["tokens"]) == {item["dataset_id"]}
        assert item["dataset_id"] == ds.train.domain_ids[i]
    for i in range(len(ds.valid_concat)):
        item = ds.valid_concat[i]
        assert _domains_in(item["tokens"]) == {item["dataset_id"]}


def test_items_have_the_contract_keys_and_collate(corpus):
    _, natural = corpus
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=64))
    batch = torch.utils.data.default_collate([ds.train[i] for i in range(8)])
    assert {"tokens", "labels", "loss_mask", "position_ids", "dataset_id"} <= set(batch)
    assert batch["tokens"].shape == (8, 16) and batch["labels"].shape == (8, 16)
    assert torch.equal(batch["tokens"][:, 1:], batch["labels"][:, :-1])
    assert batch["dataset_id"].dtype == torch.int64


def test_same_seed_same_order_other_seed_other_order(corpus):
    _, natural = corpus
    mix = _mix(natural, WEIGHTS)

    def order(seed):
        ds = build_datasets(mix, BlendConfig(seq_length=16, train_samples=120, seed=seed))
        return ds.train.domain_ids.tolist(), [ds.train[i]["tokens"].tolist() for i in range(len(ds.train))]

    a, b, c = order(7), order(7), order(8)
    assert a == b
    assert a[1] != c[1]


def test_zero_weight_domain_is_evaluated_not_trained(corpus):
    _, natural = corpus
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=200))
    assert ds.domain_names == ["d0", "d1", "d2", "d3"]
    assert 2 not in set(ds.train.domain_ids.tolist())
    assert list(ds.valid) == ds.domain_names
    assert len(ds.valid["d2"]) > 0
    assert all(ds.valid["d2"][i]["dataset_id"] == 2 for i in range(len(ds.valid["d2"])))
    assert set(ds.valid_source.values()) == {VALID_SOURCE_HELD_OUT}
    assert len(ds.valid_concat) == sum(len(v) for v in ds.valid.values())


def test_valid_covers_every_token_once(corpus):
    corpus_dir, natural = corpus
    info = json.loads((corpus_dir / "corpus.json").read_text())
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=50))
    for name, d in info["domains"].items():
        v = ds.valid[name]
        # One epoch, last partial sequence padded: every validation token is a label exactly once.
        labelled = sum(int(v[i]["loss_mask"].sum()) for i in range(len(v)))
        assert labelled == d["valid_tokens"] - 1  # the first token is never a label


def test_valid_samples_per_domain_caps(corpus):
    _, natural = corpus
    ds = build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=50, valid_samples_per_domain=3))
    assert [len(v) for v in ds.valid.values()] == [3, 3, 3, 3]


def test_hundred_domains_build(tmp_path):
    _, natural = make_tiny_corpus(tmp_path, 120, docs_per_domain=6, doc_len=(10, 30))
    base = Mixture.load(natural)
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.full(120, 0.3))
    w[rng.choice(120, 10, replace=False)] = 0.0  # some weight-0 domains among them
    mix = Mixture.from_weights(dict(zip(base.names, w)), template=base)
    n = 2000
    ds = build_datasets(mix, BlendConfig(seq_length=8, train_samples=n, valid_samples_per_domain=2))
    counts = np.bincount(ds.train.domain_ids, minlength=120)
    assert np.all(np.abs(counts - np.asarray(mix.weights) * n) <= 1)
    assert len(ds.valid) == 120 and all(len(v) >= 1 for v in ds.valid.values())
    # Domain ids stay mixture indices even though the blend skipped the weight-0 domains.
    for i in range(0, n, 97):
        item = ds.train[i]
        assert mix.weights[item["dataset_id"]] > 0


def test_cache_dir_is_used_and_data_folder_untouched(corpus, tmp_path):
    corpus_dir, natural = corpus
    before = _tree(corpus_dir)
    mix = _mix(natural, WEIGHTS)
    cfg = BlendConfig(seq_length=16, train_samples=100, cache_dir=str(tmp_path / "cache"))
    first = build_datasets(mix, cfg)
    cached = sorted(os.listdir(tmp_path / "cache"))
    assert any(f.endswith("BlendedDataset-train-dataset_index.npy") for f in cached)
    assert any(f.endswith("GPTDataset-valid-shuffle_index.npy") for f in cached)
    second = build_datasets(mix, cfg)  # a cache hit
    assert sorted(os.listdir(tmp_path / "cache")) == cached
    assert second.train.domain_ids.tolist() == first.train.domain_ids.tolist()
    assert second.train[5]["tokens"].tolist() == first.train[5]["tokens"].tolist()
    build_datasets(mix, BlendConfig(seq_length=16, train_samples=100))  # no cache dir: a private temp folder
    assert _tree(corpus_dir) == before


def test_multi_prefix_domain_shares_weight_by_tokens(tmp_path):
    corpus_dir, natural = make_tiny_corpus(tmp_path, 3)
    base = Mixture.load(natural)
    data = base.to_dict()
    # d0 reads its own data and d1's: one domain, two prefixes.
    data["domains"] = [
        {"name": "both", "weight": 0.6, "prefixes": ["d0/train", "d1/train"], "valid_prefixes": ["d0/valid", "d1/valid"]},
        {"name": "d2", "weight": 0.4, "prefixes": ["d2/train"]},
    ]
    data.pop("normalization", None)
    path = corpus_dir / "two.json"
    path.write_text(json.dumps(data))
    mix = Mixture.load(path)
    ds = build_datasets(mix, BlendConfig(seq_length=16, train_samples=500))
    counts = ds.train_counts()
    assert abs(counts["both"] - 300) <= 2 and abs(counts["d2"] - 200) <= 1
    seen = set()
    for i in range(len(ds.train)):
        item = ds.train[i]
        doms = _domains_in(item["tokens"])
        assert doms <= ({0, 1} if item["dataset_id"] == 0 else {2})
        seen |= doms
    assert seen == {0, 1, 2}
    assert ds.valid_source == {"both": VALID_SOURCE_HELD_OUT, "d2": VALID_SOURCE_IN_SAMPLE}
    assert all(_domains_in(ds.valid["d2"][i]["tokens"]) == {2} for i in range(len(ds.valid["d2"])))


def test_explicit_tokenizer_mismatch_is_an_error(corpus):
    _, natural = corpus
    wrong = TokenizerInfo(vocab_size=50257, eod=50256, name="hf:gpt2", type="hf", sha256="0" * 64)
    with pytest.raises(TokenizerMismatchError, match="does not match the corpus tokenizer"):
        build_datasets(_mix(natural, WEIGHTS), BlendConfig(seq_length=16, train_samples=10, tokenizer=wrong))


def test_missing_files_and_bad_config_are_one_line_errors(corpus, tmp_path):
    _, natural = corpus
    mix = _mix(natural, WEIGHTS)
    mix.domains[1].prefixes = ["nowhere/train"]
    with pytest.raises(MixtureError, match=r"domains\[1\]\.prefixes\[0\]: .*nowhere/train.bin does not exist"):
        build_datasets(mix, BlendConfig(seq_length=16, train_samples=10))
    with pytest.raises(ConfigError, match="seq_length: expected a positive integer"):
        BlendConfig(seq_length=0, train_samples=10)
    with pytest.raises(ConfigError, match="valid_samples_per_domain"):
        BlendConfig(seq_length=8, train_samples=10, valid_samples_per_domain=0)
    assert issubclass(ConfigError, RegmixError)


def test_builds_inside_a_gloo_process_group(corpus, tmp_path):
    """Under torch.distributed (here gloo, world size 1) megatron-core's rank-0-first protocol runs for real."""
    import torch.distributed as dist

    _, natural = corpus
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        cfg = BlendConfig(seq_length=16, train_samples=100, cache_dir=str(tmp_path / "cache"))
        ds = build_datasets(_mix(natural, WEIGHTS), cfg)
        again = build_datasets(_mix(natural, WEIGHTS), cfg)
    finally:
        dist.destroy_process_group()
    assert ds.train.domain_ids.tolist() == again.train.domain_ids.tolist()
    assert any(f.endswith("dataset_index.npy") for f in os.listdir(tmp_path / "cache"))
