"""Proxy-trainer configuration: typed dataclasses, loaded from YAML in ``megatron_configs/``.

A config file has one mapping per section (``model``, ``train``, ``optim``, ``eval``, ``checkpoint``,
``data``, ``metrics``, ``fault``); any key left out takes the default below. ``--set section.key=value``
overrides a key (the value is parsed as YAML, so ``--set optim.lr=1e-3`` is a float). Every field is
checked in ``__post_init__``; an error names the field path, e.g. ``train.steps: -1 ...``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from regmix_plugin.errors import ConfigError, check_choice


def _positive(where: str, value: Any, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where}: {value!r} is out of range; give a number {bound}")


@dataclass
class ModelConfig:
    """The GPTModel shape (megatron-core, local layer spec)."""

    num_layers: int = 2
    hidden_size: int = 256
    ffn_hidden_size: int = 512
    num_attention_heads: int = 8
    seq_length: int = 512
    normalization: str = "LayerNorm"  # or "RMSNorm"
    swiglu: bool = False  # gated SiLU MLP (Llama style) instead of GeLU
    position_embedding_type: str = "learned_absolute"  # or "rope"
    dropout: float = 0.0  # hidden and attention dropout
    attention: str = "sdpa"  # torch's fused causal attention; "megatron" = megatron-core's DotProductAttention
    init_method_std: float = 0.02
    untie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "seq_length"):
            _positive(f"model.{name}", getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.num_attention_heads: {self.num_attention_heads} does not divide model.hidden_size "
                f"{self.hidden_size}; pick a divisor"
            )
        check_choice("model.normalization", self.normalization, ("LayerNorm", "RMSNorm"))
        check_choice("model.position_embedding_type", self.position_embedding_type, ("learned_absolute", "rope"))
        check_choice("model.attention", self.attention, ("sdpa", "megatron"))
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: {self.dropout!r} is out of range; give a probability in [0, 1)")
        _positive("model.init_method_std", self.init_method_std)


@dataclass
class TrainConfig:
    """Run length, batch shape, seed and device."""

    steps: int = 100
    global_batch_size: int = 16  # sequences per optimizer step, over all data-parallel ranks
    micro_batch_size: int = 16  # sequences per forward pass on one rank; the rest is gradient accumulation
    seed: int = 1234
    device: str = "auto"  # cpu, cuda, or auto (cuda when available)
    threads: int = 0  # torch intra-op threads per rank on CPU; 0 = torch's default
    log_every: int = 10
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        for name in ("steps", "global_batch_size", "micro_batch_size", "log_every"):
            _positive(f"train.{name}", getattr(self, name))
        _positive("train.threads", self.threads, allow_zero=True)
        check_choice("train.device", self.device, ("cpu", "cuda", "auto"))


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then a constant or cosine learning rate."""

    lr: float = 1e-3
    min_lr: float = 1e-4  # cosine floor
    lr_schedule: str = "cosine"
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        check_choice("optim.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _positive("optim.lr", self.lr)
        _positive("optim.min_lr", self.min_lr, allow_zero=True)
        _positive("optim.warmup_steps", self.warmup_steps, allow_zero=True)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim.grad_clip", self.grad_clip, allow_zero=True)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}: {getattr(self, name)!r} is out of range; give a number in [0, 1)")


@dataclass
class EvalConfig:
    """Per-domain validation: every N steps, over each domain's validation set."""

    every: int = 50  # 0 = only at the end
    samples_per_domain: int = 32  # validation sequences per domain (each evaluated every time)
    batch_size: int = 16  # sequences per forward pass on one rank
    at_end: bool = True
    # Evaluation sets that are not training domains: {name: data prefix (.bin/.idx), absolute or relative to
    # the working directory}. Evaluated whole (not samples_per_domain) beside the domains as valid/<name>/loss,
    # never trained on (DECISIONS 39, 45).
    sets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive("eval.every", self.every, allow_zero=True)
        _positive("eval.samples_per_domain", self.samples_per_domain)
        _positive("eval.batch_size", self.batch_size)
        for name, prefix in self.sets.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError(f"eval.sets: {name!r} is not a set name; give a name without '/' such as held_out")
            if not isinstance(prefix, str) or not prefix:
                raise ConfigError(f"eval.sets.{name}: {prefix!r} is not a data prefix; give the path of a .bin/.idx pair "
                                  "without the extension")


@dataclass
class CheckpointConfig:
    every: int = 0  # save every N steps (0 = only at the end); --resume continues from the latest
    at_end: bool = True

    def __post_init__(self) -> None:
        _positive("checkpoint.every", self.every, allow_zero=True)


@dataclass
class DataConfig:
    loader: str = "torch"  # "dali" feeds the same samples through an NVIDIA DALI pipeline ([dali] extra)
    num_workers: int = 0  # DataLoader worker processes per rank
    cache_dir: str | None = None  # megatron-core index cache; None: rebuilt in a private temporary folder
    # Only for corpora without a corpus.json (e.g. from Megatron-LM's preprocess_data.py):
    vocab_size: int | None = None
    eod: int | None = None

    def __post_init__(self) -> None:
        check_choice("data.loader", self.loader, ("torch", "dali"))
        _positive("data.num_workers", self.num_workers, allow_zero=True)
        if (self.vocab_size is None) != (self.eod is None):
            raise ConfigError("data.vocab_size, data.eod: give both (the corpus tokenizer) or neither")


@dataclass
class MetricsConfig:
    tensorboard: bool = True
    wandb: bool = False  # needs the wandb package; project/entity from the usual WANDB_* variables
    wandb_project: str = "regmix"


@dataclass
class FaultConfig:
    """Fault injection for testing the failure path (documented in docs/proxy.md); off by default."""

    nan_at_step: int | None = None  # replace the training loss by NaN at this step
    crash_at_step: int | None = None  # raise an exception at this step


@dataclass
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
        sections = {}
        for key, value in data.items():
            if key not in _SECTIONS:
                raise ConfigError(f"{key}: unknown section; choose one of {', '.join(_SECTIONS)}")
            sections[key] = _build_section(key, _SECTIONS[key], value)
        return cls(**sections)

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> "ProxyConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"--config: {path} not found; give a YAML file such as megatron_configs/proxy-tiny-cpu.yaml") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--config: {path} is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
        data = data or {}
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data, where=str(path))


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "data": DataConfig,
    "metrics": MetricsConfig,
    "fault": FaultConfig,
}


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


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key; allowed keys are {', '.join(sorted(known))}")
        kwargs[key] = _coerce(f"{name}.{key}", hints[key], value)
    return cls(**kwargs)


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """Check a YAML value against a field's annotation; ints are accepted where floats are expected."""
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed; give {_KIND[base]}")
    if base is float and isinstance(value, str):
        try:  # PyYAML reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    ok = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (base is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{where}: expected {_KIND[base]}, got {value!r}")
    return float(value) if base is float else value
