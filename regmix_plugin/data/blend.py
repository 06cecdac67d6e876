"""The one dataset builder: a mixture -> megatron-core train blend + one validation dataset per domain.

The Megatron integration, the proxy trainer and the tests all call :func:`build_datasets`.

* **Train** is megatron-core's ``BlendedMegatronDatasetBuilder(GPTDataset, ...)`` over the prefixes of the
  domains with weight > 0 (megatron-core asserts every blend weight is > 0, so weight-0 domains are left
  out). A domain with several prefixes shares its weight among them in proportion to their token counts.
  megatron-core's blending is deterministic and greedy, so the first ``n`` samples hold each domain within
  one sample of ``n * weight``. Each item's ``dataset_id`` is the index of its domain in
  ``mixture.domains`` (megatron-core's own id counts blend entries, which skip weight-0 domains).
* **Valid** is one dataset per domain, for *all* domains including weight-0 ones: one epoch of the domain's
  ``valid_prefixes``, shuffled by the seed and cut to ``valid_samples_per_domain``. The last partial
  sequence is kept and padded (padding has ``loss_mask`` 0), so a small validation set still counts every
  token. **Fallback:** a domain without ``valid_prefixes`` (e.g. a Megatron-LM corpus without a held-out
  split) is evaluated on its training prefixes, which is an in-sample loss; ``MixtureDatasets.valid_source``
  says which domains this happened to, and a warning is logged. ``regmix corpus build`` always writes a
  held-out set, so its corpora never need the fallback.
* **Index cache:** megatron-core writes its shuffle/sample indices to ``path_to_cache``; without one it
  writes into a ``cache/`` folder beside the data, which can be read-only or shared by parallel proxy runs.
  So with ``cache_dir=None`` we build into a private temporary folder and delete it afterwards (the indices
  of a fresh build are held in memory); under torch.distributed with several ranks a shared ``cache_dir``
  is required, because the other ranks read what rank 0 built. With a ``cache_dir``, a build on a single process holds an
  exclusive ``flock`` on ``cache_dir/.regmix-build.lock`` so that parallel proxy runs never read a cache
  file another is still writing; under torch.distributed, megatron-core's own rank-0-first protocol does
  that job and we take no lock (a lock there would deadlock against its barrier). megatron-core 0.19 needs
  no process group for the cache (checked on CPU), so none is created.
* **Which ranks build:** under torch.distributed every rank calls :func:`build_datasets` (megatron-core's
  builder synchronises them with barriers), and only ranks with ``build_on_this_rank`` get datasets; the
  others get ``None`` in their place. Megatron-LM builds on tensor-parallel rank 0 of the first and last
  pipeline stages and broadcasts batches to the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from regmix_plugin.data.indexed import index_stats, quiet_megatron
from regmix_plugin.data.tokenizer import TokenizerInfo, check_tokenizer, infer_tokenizer
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.mixture import Mixture

logger = logging.getLogger(__name__)

VALID_SOURCE_HELD_OUT = "valid_prefixes"
VALID_SOURCE_IN_SAMPLE = "train_prefixes"


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


@dataclass
class BlendConfig:
    """How to build datasets from a mixture (the mixture says *what*; this says *how much* and *in which order*)."""

    seq_length: int
    train_samples: int  # samples of seq_length tokens in the train blend
    valid_samples_per_domain: int | None = None  # None: one full epoch of each domain's validation set
    valid_whole: tuple[str, ...] = ()  # domains evaluated on one full epoch whatever valid_samples_per_domain says
    seed: int = 1234
    cache_dir: str | None = None  # megatron-core index cache; None: a private temp folder, removed after the build
    tokenizer: TokenizerInfo | None = None  # None: read from the corpus.json next to the prefixes
    # Further GPTDatasetConfig fields, passed through as given (a Megatron launch maps its flags here in one
    # place, regmix_plugin.megatron.datasets.gpt_dataset_options); what is not given keeps GPT_DEFAULTS.
    gpt_options: Mapping[str, Any] = field(default_factory=dict)
    build_on_this_rank: bool = True  # False: take part in megatron-core's barriers but build nothing

    def __post_init__(self) -> None:
        _positive_int("seq_length", self.seq_length)
        _positive_int("train_samples", self.train_samples)
        _positive_int("valid_samples_per_domain", self.valid_samples_per_domain, allow_none=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if self.tokenizer is not None and not isinstance(self.tokenizer, TokenizerInfo):
            raise ConfigError(f"tokenizer: expected a TokenizerInfo, got {type(self.tokenizer).__name__}")
        if self.cache_dir is not None:
            self.cache_dir = os.fspath(self.cache_dir)
        self.gpt_options = dict(self.gpt_options)
        owned = sorted(set(self.gpt_options) & _BUILDER_OWNS)
        if owned:
            raise ConfigError(f"gpt_options.{owned[0]}: set by the dataset builder itself; leave it out")
        from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

        known = {f.name for f in dataclasses.fields(GPTDatasetConfig) if f.init}
        unknown = sorted(set(self.gpt_options) - known)
        if unknown:
            raise ConfigError(f"gpt_options.{unknown[0]}: not a field of megatron-core's GPTDatasetConfig; check "
                              "the name")


# What the builder decides (from the mixture and BlendConfig's own fields), never taken from gpt_options.
_BUILDER_OWNS = {"random_seed", "sequence_length", "tokenizer", "blend", "blend_per_split", "split", "path_to_cache",
                 "drop_last_partial_validation_sequence", "multiple_validation_sets", "full_validation"}
# GPTDatasetConfig fields that differ from megatron-core's defaults here: trainers build one causal mask (not one
# [1, s, s] mask per sample), and nothing is reset or masked at document ends unless asked.
GPT_DEFAULTS = {"reset_position_ids": False, "reset_attention_mask": False, "eod_mask_loss": False,
                "create_attention_mask": False, "mid_level_dataset_surplus": 0.005}


class DomainTaggedDataset(torch.utils.data.Dataset):
    """A length-limited view of a megatron-core dataset whose items carry ``dataset_id`` = domain index.

    ``domain_ids[i]`` is the domain of item ``i``, available without reading any tokens (for counting).
    """

    def __init__(self, base: torch.utils.data.Dataset, domain_ids: np.ndarray) -> None:
        self.base = base
        self.domain_ids = np.asarray(domain_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.domain_ids)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        item = dict(self.base[int(idx) % len(self)])
        _repair_mask_cache(self.base)
        item["dataset_id"] = int(self.domain_ids[idx])
        return item


def _repair_mask_cache(ds: Any) -> None:
    """Undo megatron-core 0.19's corruption of a GPTDataset's cached loss mask.

    GPTDataset caches the loss mask of the first sample it serves in a process and, for a padded sample (the
    last, partial sequence of a validation set), then zeroes the padded positions *in the cached tensor*: every
    later sample in that process loses those positions from its loss. Which sample comes first differs per
    data-loader worker, so evaluations silently disagree. The cache is only used when the mask does not depend
    on the data (no --eod-mask-loss / --reset-*), where the right cached mask is all ones.
    """
    members = getattr(ds, "datasets", None)
    if members:  # a BlendedDataset: repair the GPTDatasets it draws from
        for member in members:
            _repair_mask_cache(member)
    elif getattr(ds, "masks_and_position_ids_are_cached", False) and getattr(ds, "masks_and_position_ids_are_cacheable", False):
        if not bool(ds.cached_loss_mask.all()):
            ds.cached_loss_mask = torch.ones_like(ds.cached_loss_mask)


@dataclass
class MixtureDatasets:
    """What :func:`build_datasets` returns."""

    train: DomainTaggedDataset | None  # None on a rank that does not build
    valid: dict[str, DomainTaggedDataset | None]  # every domain, weight 0 included, in mixture order
    domain_names: list[str]
    tokenizer: TokenizerInfo
    valid_source: dict[str, str] = field(default_factory=dict)  # domain -> valid_prefixes | train_prefixes

    @property
    def valid_concat(self) -> torch.utils.data.ConcatDataset:
        """Every domain's validation samples, domain after domain."""
        return torch.utils.data.ConcatDataset(list(self.valid.values()))

    def train_counts(self) -> dict[str, int]:
        """Samples per domain in the train blend (0 for weight-0 domains)."""
        counts = np.bincount(self.train.domain_ids, minlength=len(self.domain_names))
        return {n: int(c) for n, c in zip(self.domain_names, counts)}


def build_datasets(mixture: Mixture, cfg: BlendConfig) -> MixtureDatasets:
    """Build the train blend and the per-domain validation datasets of ``mixture`` (see the module doc)."""
    if not isinstance(mixture, Mixture):
        raise ConfigError(f"mixture: expected a Mixture, got {type(mixture).__name__}")
    mixture.check_files()
    if cfg.tokenizer is None:
        tokenizer = infer_tokenizer(mixture)
    else:
        tokenizer = cfg.tokenizer
        check_tokenizer(mixture, tokenizer)

    with _cache_folder(cfg.cache_dir) as cache, quiet_megatron():
        train = _build_train(mixture, cfg, tokenizer, cache)
        valid, source = {}, {}
        for k, d in enumerate(mixture.domains):
            valid[d.name], source[d.name] = _build_valid(mixture, k, cfg, tokenizer, cache)
    in_sample = [n for n, s in source.items() if s == VALID_SOURCE_IN_SAMPLE]
    if in_sample:
        logger.warning("no valid_prefixes for %s: evaluating on the training data (in-sample loss)", ", ".join(in_sample))
    return MixtureDatasets(
        train=train,
        valid=valid,
        domain_names=mixture.names,
        tokenizer=tokenizer,
        valid_source=source,
    )


def _distributed_world() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1


@contextlib.contextmanager
def _cache_folder(cache_dir: str | None) -> Iterator[str]:
    if cache_dir is None and _distributed_world() > 1:
        # Rank 0 builds the indices and the other ranks read them back from the cache, so a private folder
        # would leave them nothing to read.
        raise ConfigError(
            f"cache_dir: required under torch.distributed ({_distributed_world()} ranks); give a folder every rank can read"
        )
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="regmix-index-cache-")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cache_dir: cannot create {cache_dir} ({e.strerror}); give a writable folder") from None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        yield cache_dir  # megatron-core's rank-0-first build and barriers order the writes
        return
    with open(os.path.join(cache_dir, ".regmix-build.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield cache_dir
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _gpt_config(cfg: BlendConfig, tokenizer: TokenizerInfo, cache: str, **blend: Any):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=cfg.seed,
        sequence_length=cfg.seq_length,
        tokenizer=tokenizer,
        # Keep the last partial validation sequence (padded, loss-masked), so a small validation set counts
        # every token.
        drop_last_partial_validation_sequence=False,
        path_to_cache=cache,
        **{**GPT_DEFAULTS, **cfg.gpt_options},
        **blend,
    )


def _build(config, sizes: list[int | None], build_on_this_rank: bool) -> list[Any]:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: build_on_this_rank, config).build()


def _train_blend(mixture: Mixture) -> tuple[list[str], list[float], list[int]]:
    """Flat (prefixes, weights, domain index per prefix) over domains with weight > 0."""
    prefixes, weights, owner = [], [], []
    for k, d in enumerate(mixture.domains):
        if d.weight <= 0:
            continue
        paths = [mixture.resolve(p) for p in d.prefixes]
        tokens = [index_stats(p, f"domains[{k}].prefixes[{j}]").tokens for j, p in enumerate(paths)]
        if sum(tokens) == 0:
            raise RegmixError(f"domains[{k}] ({d.name}): its training prefixes hold 0 tokens; give it weight 0 or data")
        for p, t in zip(paths, tokens):
            if t > 0:
                prefixes.append(p)
                weights.append(d.weight * t / sum(tokens))
                owner.append(k)
    return prefixes, weights, owner


def _surplus_needed(weights: list[float], n: int, floor: float) -> float:
    """The mid-level surplus that keeps megatron-core's blend from asking a domain for more than it built.

    megatron-core builds ``ceil(ceil(n * w) * (1 + surplus))`` samples per blend entry, but its greedy
    blending can draw a few more than ``ceil(n * w)`` from an entry when there are many (with 100+ domains it
    raises "the train blend oversamples the contributing datasets"). We run the same deterministic blending
    helper first and raise the surplus just enough.
    """
    from megatron.core.datasets import helpers
    from megatron.core.datasets.utils import normalize

    w = normalize(weights)
    target = [math.ceil(n * x) for x in w]
    size = sum(target)
    dataset_index = np.zeros(size, dtype=np.int16)
    sample_index = np.zeros(size, dtype=np.int64)
    helpers.build_blending_indices(dataset_index, sample_index, w, len(w), size, False)
    drawn = np.bincount(dataset_index, minlength=len(w))
    ratio = max(d / t for d, t in zip(drawn.tolist(), target))
    return max(floor, ratio - 1 + 1e-9)


def _build_train(mixture: Mixture, cfg: BlendConfig, tokenizer: TokenizerInfo, cache: str) -> DomainTaggedDataset | None:
    prefixes, weights, owner = _train_blend(mixture)
    floor = cfg.gpt_options.get("mid_level_dataset_surplus", GPT_DEFAULTS["mid_level_dataset_surplus"])
    surplus = _surplus_needed(weights, cfg.train_samples, floor)
    config = _gpt_config(cfg, tokenizer, cache, blend=(prefixes, weights), split="1,0,0")
    config.mid_level_dataset_surplus = surplus
    # Size 0 (not None) for the unused splits: megatron-core requires sizes when weights are given.
    blended = _build(config, [cfg.train_samples, 0, 0], cfg.build_on_this_rank)[0]
    if blended is None:
        return None
    n = min(cfg.train_samples, len(blended))
    domain_ids = np.asarray(owner, dtype=np.int64)[np.asarray(blended.dataset_index[:n], dtype=np.int64)]
    return DomainTaggedDataset(blended, domain_ids)


def _build_valid(
    mixture: Mixture, k: int, cfg: BlendConfig, tokenizer: TokenizerInfo, cache: str
) -> tuple[DomainTaggedDataset | None, str]:
    d = mixture.domains[k]
    field_name = "valid_prefixes" if d.valid_prefixes else "prefixes"
    source = VALID_SOURCE_HELD_OUT if d.valid_prefixes else VALID_SOURCE_IN_SAMPLE
    paths = [mixture.resolve(p) for p in getattr(d, field_name)]
    nonempty = [p for j, p in enumerate(paths) if index_stats(p, f"domains[{k}].{field_name}[{j}]").tokens > 0]
    if not nonempty:
        raise RegmixError(f"domains[{k}].{field_name} ({d.name}): the validation data holds 0 tokens; rebuild it with data")
    # Weights None and size None: one epoch of every prefix, blended exhaustively when there are several.
    config = _gpt_config(cfg, tokenizer, cache, blend_per_split=[None, (nonempty, None), None])
    ds = _build(config, [0, None, 0], cfg.build_on_this_rank)[1]
    if ds is None:
        return None, source
    whole = cfg.valid_samples_per_domain is None or d.name in cfg.valid_whole
    n = len(ds) if whole else min(cfg.valid_samples_per_domain, len(ds))
    return DomainTaggedDataset(ds, np.full(n, k, dtype=np.int64)), source
