"""Proxy-trainer configuration: typed dataclasses, loaded from YAML in ``megatron_configs/``.

A config file has one mapping per section (``model``, ``train``, ``optim``, ``eval``, ``checkpoint``,
``data``, ``metrics``, ``fault``); any key left out takes the default below. ``--set section.key=value``
overrides a key (the value is parsed as YAML, so ``--set optim.lr=1e-3`` is a float). Every field is
checked by its type (regmix_plugin/config_schema.py); an error names the field path, e.g. ``train.steps: -1 ...``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from typing import Any

import yaml

from regmix_plugin.config_schema import Checked, Choice, Flag, Number, Text, config, read_yaml_file, validate
from regmix_plugin.errors import ConfigError

# "steps: -3 is out of range; give a number > 0". Floats also accept what PyYAML leaves as a string ("1e-3").
_RANGE = "{value} is out of range; give {expect}"


def _int(**bound: float) -> Any:
    return Number(integer=True, says=_RANGE, expect="a number " + _bound_text(bound), **bound)


def _float(expect: str | None = None, **bound: float) -> Any:
    return Number(says=_RANGE, expect=expect or ("a number " + _bound_text(bound)), parse_str=True, cast=True, **bound)


def _bound_text(bound: dict) -> str:
    return {("gt",): "> 0", ("ge",): ">= 0", ("ge", "lt"): "in [0, 1)"}[tuple(bound)]


Count = _int(gt=0)
Index = _int(ge=0)
Positive = _float(gt=0)
NonNegative = _float(ge=0)
Fraction = _float(ge=0, lt=1)


@config(allowed="allowed keys are ")
class ModelConfig:
    """The GPTModel shape (megatron-core, local layer spec)."""

    num_layers: Count = 2
    hidden_size: Count = 256
    ffn_hidden_size: Count = 512
    num_attention_heads: Count = 8
    seq_length: Count = 512
    normalization: Choice("LayerNorm", "RMSNorm") = "LayerNorm"
    swiglu: Flag = False  # gated SiLU MLP (Llama style) instead of GeLU
    position_embedding_type: Choice("learned_absolute", "rope") = "learned_absolute"
    dropout: _float(expect="a probability in [0, 1)", ge=0, lt=1) = 0.0  # hidden and attention dropout
    # torch's fused causal attention; "megatron" = megatron-core's DotProductAttention
    attention: Choice("sdpa", "megatron") = "sdpa"
    init_method_std: Positive = 0.02
    untie_embeddings: Flag = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.num_attention_heads: {self.num_attention_heads} does not divide model.hidden_size "
                f"{self.hidden_size}; pick a divisor"
            )


@config(allowed="allowed keys are ")
class TrainConfig:
    """Run length, batch shape, seed and device."""

    steps: Count = 100
    global_batch_size: Count = 16  # sequences per optimizer step, over all data-parallel ranks
    micro_batch_size: Count = 16  # sequences per forward pass on one rank; the rest is gradient accumulation
    seed: Number(integer=True) = 1234
    device: Choice("cpu", "cuda", "auto") = "auto"  # cpu, cuda, or auto (cuda when available)
    threads: Index = 0  # torch intra-op threads per rank on CPU; 0 = torch's default
    log_every: Count = 10
    progress: Flag = True  # tqdm progress bar on rank 0


@config(allowed="allowed keys are ")
class OptimConfig:
    """AdamW with linear warmup, then a constant or cosine learning rate."""

    lr: Positive = 1e-3
    min_lr: NonNegative = 1e-4  # cosine floor
    lr_schedule: Choice("constant", "cosine") = "cosine"
    warmup_steps: Index = 10
    weight_decay: NonNegative = 0.1
    beta1: Fraction = 0.9
    beta2: Fraction = 0.95
    eps: Number(parse_str=True, cast=True) = 1e-8
    grad_clip: NonNegative = 1.0  # max global grad norm; 0 disables clipping


def _set_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{name!r} is not a set name; give a name without '/' such as held_out")
    return name


def _data_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"{prefix!r} is not a data prefix; give the path of a .bin/.idx pair without the extension")
    return prefix


@config(allowed="allowed keys are ")
class EvalConfig:
    """Per-domain validation: every N steps, over each domain's validation set."""

    every: Index = 50  # 0 = only at the end
    samples_per_domain: Count = 32  # validation sequences per domain (each evaluated every time)
    batch_size: Count = 16  # sequences per forward pass on one rank
    at_end: Flag = True
    # Evaluation sets that are not training domains: {name: data prefix (.bin/.idx), absolute or relative to
    # the working directory}. Evaluated whole (not samples_per_domain) beside the domains as valid/<name>/loss,
    # never trained on (DECISIONS 39, 49).
    sets: dict[Checked(_set_name), Checked(_data_prefix)] = field(default_factory=dict)


@config(allowed="allowed keys are ")
class CheckpointConfig:
    every: Index = 0  # save every N steps (0 = only at the end); --resume continues from the latest
    at_end: Flag = True


@config(allowed="allowed keys are ")
class DataConfig:
    loader: Choice("torch", "dali") = "torch"  # "dali" feeds the same samples through an NVIDIA DALI pipeline ([dali] extra)
    num_workers: Index = 0  # DataLoader worker processes per rank
    cache_dir: Text | None = None  # megatron-core index cache; None: rebuilt in a private temporary folder
    # Only for corpora without a corpus.json (e.g. from Megatron-LM's preprocess_data.py):
    vocab_size: Count | None = None
    eod: Index | None = None

    def __post_init__(self) -> None:
        if (self.vocab_size is None) != (self.eod is None):
            raise ConfigError("data.vocab_size, data.eod: give both (the corpus tokenizer) or neither")


@config(allowed="allowed keys are ")
class MetricsConfig:
    tensorboard: Flag = True
    wandb: Flag = False  # needs the wandb package; project/entity from the usual WANDB_* variables
    wandb_project: Text = "regmix"


@config(allowed="allowed keys are ")
class FaultConfig:
    """Fault injection for testing the failure path (documented in docs/proxy.md); off by default."""

    nan_at_step: Number(integer=True) | None = None  # replace the training loss by NaN at this step
    crash_at_step: Number(integer=True) | None = None  # raise an exception at this step


@config(allowed="allowed keys are ")
class ProxyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "<config>") -> "ProxyConfig":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(_SECTIONS)})")
        # a section left empty (`fault:` alone) keeps its defaults
        return validate(cls, {k: v for k, v in data.items() if v is not None})

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> "ProxyConfig":
        data = read_yaml_file(path, f"--config {path}",
                              remedy="give a YAML file such as megatron_configs/proxy-tiny-cpu.yaml") or {}
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data, where=str(path))


_SECTIONS = [f.name for f in dataclasses.fields(ProxyConfig)]


def apply_override(data: dict, item: str) -> None:
    """Apply one ``section.key=value`` override to a raw config mapping."""
    path, sep, raw = item.partition("=")
    parts = path.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set: {item!r} is not section.key=value; e.g. --set train.steps=20")
    section, key = parts
    if section not in _SECTIONS:
        raise ConfigError(f"--set {path}: unknown section {section!r}; choose one of {', '.join(_SECTIONS)}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    sec = data.setdefault(section, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{section}: expected a mapping of keys to values")
    sec[key] = value
