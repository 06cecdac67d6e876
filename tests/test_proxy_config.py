"""Proxy configs: the shipped YAML files, --set overrides, validation messages and the LR schedule."""

from __future__ import annotations

import math

import pytest
from proxy_helpers import REPO

from regmix_plugin.errors import ConfigError
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.trainer import lr_at

CONFIGS = REPO / "megatron_configs"


def test_shipped_configs_load():
    one = ProxyConfig.load(CONFIGS / "proxy-1m.yaml")
    assert (one.model.num_layers, one.model.hidden_size, one.model.ffn_hidden_size) == (2, 256, 512)
    tiny = ProxyConfig.load(CONFIGS / "proxy-tiny-cpu.yaml")
    assert tiny.model.seq_length == 128 and tiny.train.device == "cpu"
    big = ProxyConfig.load(CONFIGS / "proxy-60m.yaml")
    assert big.model.hidden_size == 768 and big.model.num_layers == 10


def test_overrides_are_typed_by_the_field():
    cfg = ProxyConfig.load(CONFIGS / "proxy-tiny-cpu.yaml",
                           ["optim.lr=1e-3", "train.steps=7", "model.swiglu=true", "fault.nan_at_step=3", "data.cache_dir=/tmp/c"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 7 and cfg.model.swiglu is True and cfg.fault.nan_at_step == 3
    assert cfg.data.cache_dir == "/tmp/c"
    assert ProxyConfig.from_dict(cfg.to_dict() | {}) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps: expected an integer, got 'abc'"),
    ("train.stpes=3", "train.stpes: unknown key; allowed keys are"),
    ("trian.steps=3", "--set trian.steps: unknown section 'trian'"),
    ("train.steps", "--set: 'train.steps' is not section.key=value"),
    ("model.num_attention_heads=3", "model.num_attention_heads: 3 does not divide model.hidden_size 64"),
    ("optim.lr_schedule=linear", "optim.lr_schedule: unknown value 'linear'; choose one of constant, cosine"),
    ("model.dropout=1.5", "model.dropout: 1.5 is out of range"),
    ("data.loader=ffcv", "data.loader: unknown value 'ffcv'; choose one of torch, dali"),
    ("data.vocab_size=300", "data.vocab_size, data.eod: give both"),
    ("train.threads=null", "train.threads: null is not allowed"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        ProxyConfig.load(CONFIGS / "proxy-tiny-cpu.yaml", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ProxyConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ProxyConfig.load(bad)


def test_warmup_then_cosine_or_constant():
    cfg = ProxyConfig.from_dict({"train": {"steps": 110}, "optim": {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 10}})
    assert [lr_at(cfg, s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(cfg, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(cfg, 110) == pytest.approx(0.1)
    const = ProxyConfig.from_dict({"optim": {"lr": 2.0, "lr_schedule": "constant", "warmup_steps": 0}})
    assert lr_at(const, 0) == lr_at(const, 99) == 2.0
