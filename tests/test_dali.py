"""The DALI loader backend on a CPU-only pipeline: the same samples, in the same order, as the torch DataLoader."""

from __future__ import annotations

import pytest
import torch
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG, make_corpus

from regmix_plugin.data.blend import BlendConfig, build_datasets
from regmix_plugin.metrics import read_metrics
from regmix_plugin.mixture import Mixture
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.data import BatchLayout, StepBatchSampler, make_loader
from regmix_plugin.proxy.trainer import train
from regmix_plugin.schedule import Schedule

pytest.importorskip("nvidia.dali")
from regmix_plugin.proxy.dali import KEYS, DaliLoader  # noqa: E402


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("dcorpus"), ("web", "code"), docs=24)


def test_dali_yields_the_torch_loader_batches(natural):
    ds = build_datasets(Mixture.load(natural), BlendConfig(seq_length=32, train_samples=48)).train
    for rank in (0, 1):  # a DP rank's share, resumed mid-run at phase-local step 2
        sampler = StepBatchSampler(BatchLayout(8, 2, 2, rank), 2, 6)
        ref, got = list(make_loader(ds, sampler, 0)), list(DaliLoader(ds, sampler, 32))
        assert len(got) == len(ref) == 8
        for a, b in zip(ref, got):
            for k in KEYS:
                assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_proxy_run_with_dali_equals_torch_loader_run(natural, tmp_path):
    results = {}
    for loader in ("torch", "dali"):
        cfg = ProxyConfig.load(TINY_CONFIG, [*TEST_OVERRIDES, "train.steps=4", "eval.every=2", f"data.loader={loader}"])
        assert train(cfg, Schedule.single(natural), tmp_path / loader).status == "completed"
        results[loader] = [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tmp_path / loader / "metrics.jsonl")]
    assert results["dali"] == results["torch"]
