"""Megatron-LM's ``train_valid_test_datasets_provider`` for ``--data-mixture-from`` / ``--data-schedule-from``.

The train split is the mixture's blend (weight-0 domains left out), built for the number of samples Megatron
asks for (with ``--phase-transition-iterations``: the samples of the current phase). The validation split is a
:class:`~regmix_plugin.megatron.validation.FixedValidationSet` over every domain's validation set, read whole
at each evaluation (items carry ``dataset_id`` = the domain's index; the loss function splits losses by it).
The provider sets ``args.eval_iters`` to one pass over it, agreed by all ranks.

As in Megatron-LM's own ``pretrain_gpt.py``, datasets are built only on tensor-parallel rank 0 of the first
and last pipeline stages; the other ranks receive their batches by broadcast.

A launch reads its mixture (or schedule and phase mixtures) once, into a :class:`MixtureSource` that the
provider, the loss tally and the evaluation hook share; :func:`gpt_dataset_options` is the one place Megatron's
flags become megatron-core dataset settings.
"""

from __future__ import annotations

import argparse
import os

import torch

from regmix_plugin.data.blend import BlendConfig, MixtureDatasets, build_datasets
from regmix_plugin.data.tokenizer import TokenizerInfo, infer_tokenizer
from regmix_plugin.megatron.validation import FixedValidationSet
from regmix_plugin.mixture import Mixture
from regmix_plugin.schedule import Schedule


class MixtureSource:
    """The launch's ``--data-mixture-from`` or ``--data-schedule-from``, each file read once per process.

    ``names``: the domains evaluated, in ``dataset_id`` order (the mixture's, or under a schedule the first
    phase's, every phase checked to list the same domains with the same validation data). ``mixture(i)``: the
    mixture that trains iteration ``i``, as its file says (datasets are built from it in ``names`` order).
    """

    def __init__(self, path: str, schedule: Schedule | None, mixtures: list[Mixture]) -> None:
        self.path, self.schedule = path, schedule
        self.names = schedule.domain_order(mixtures) if schedule is not None else mixtures[0].names
        self._mixtures = mixtures

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MixtureSource":
        if args.data_schedule_from:
            # phases given as fractions of training resolve against this run's iterations
            schedule = Schedule.load(args.data_schedule_from).for_megatron(args.train_samples, args.global_batch_size)
            return cls(args.data_schedule_from, schedule, [p.load() for p in schedule.phases])
        return cls(args.data_mixture_from, None, [Mixture.load(args.data_mixture_from)])

    def mixture(self, iteration: int | None) -> Mixture:
        """The mixture that trains ``iteration`` (the iteration Megatron resumed from; None or 0 on a fresh start)."""
        k = self.schedule.phase_index(iteration or 0) if self.schedule is not None else 0
        return self._mixtures[k]


def gpt_dataset_options(args: argparse.Namespace) -> dict:
    """megatron-core GPTDatasetConfig fields from Megatron's flags: the one place a launch maps them.

    The same fields Megatron-LM's own pretrain_gpt.py (core_gpt_dataset_config_from_args) takes from its
    arguments, less those the mixture decides (blend, split, seed, sequence length, tokenizer, cache) and those
    refused at launch (check_regmix_args: --split, --full-validation, --multiple-validation-sets,
    --object-storage-cache-path, --dataloader-fast-cache-load, --dataloader-defer-npy-index-mmap,
    --per-dataset-sequences-path, --allow-ambiguous-pad-tokens).
    """
    return {
        "reset_position_ids": args.reset_position_ids,
        "reset_attention_mask": args.reset_attention_mask,
        "eod_mask_loss": args.eod_mask_loss,
        "create_attention_mask": args.create_attention_mask_in_dataloader,
        "mmap_bin_files": args.mmap_bin_files,
        "mid_level_dataset_surplus": args.mid_level_dataset_surplus,
        "num_dataset_builder_threads": args.num_dataset_builder_threads,
    }


def tokenizer_info(args: argparse.Namespace, mixture: Mixture) -> TokenizerInfo:
    """Megatron's tokenizer as the dataset builder needs it (vocabulary size, end-of-document id).

    When the corpus.json next to the data names a tokenizer with the same size and eod, that record is used,
    so the builder's check passes; otherwise the builder refuses the mixture with a one-line mismatch error.
    """
    from megatron.training import get_tokenizer

    tok = get_tokenizer()  # built by parse_and_validate_args from --tokenizer-type
    corpus = infer_tokenizer(mixture, required=False)
    if corpus is not None and (corpus.vocab_size, corpus.eod) == (int(tok.vocab_size), int(tok.eod)):
        return corpus
    return TokenizerInfo(vocab_size=int(tok.vocab_size), eod=int(tok.eod), name=str(args.tokenizer_type), type="hf")


def cache_dir(args: argparse.Namespace) -> str | None:
    """megatron-core builds its indices on rank 0 and the other ranks read them back, so every rank must see
    the cache: ``--data-cache-path``, else ``<--save>/data_cache``."""
    if args.data_cache_path:
        return args.data_cache_path
    return os.path.join(args.save, "data_cache") if args.save else None


def build_for_args(args: argparse.Namespace, train_samples: int, build_on_this_rank: bool = True,
                   source: MixtureSource | None = None) -> MixtureDatasets:
    """The datasets of the phase Megatron resumed at, built as Megatron's flags say."""
    source = source or MixtureSource.from_args(args)
    # Datasets follow source.names so that dataset_id means the same domain in every phase.
    mixture = source.mixture(getattr(args, "iteration", 0)).reordered(source.names)
    return build_datasets(mixture, BlendConfig(
        seq_length=args.seq_length,
        train_samples=max(int(train_samples), 1),
        valid_samples_per_domain=args.regmix_valid_samples_per_domain,
        seed=args.seed,
        cache_dir=cache_dir(args),
        tokenizer=tokenizer_info(args, mixture),
        gpt_options=gpt_dataset_options(args),
        build_on_this_rank=build_on_this_rank,
    ))


def builds_on_this_rank(vp_stage=None) -> bool:
    """Megatron-LM's rule: tensor-parallel rank 0 of the first and last pipeline stages reads the data."""
    from megatron.core import parallel_state as mpu
    from megatron.training.utils.common_utils import is_first_or_last_pipeline_stage

    return is_first_or_last_pipeline_stage(vp_stage) and mpu.get_tensor_model_parallel_rank() == 0


def agree_on_eval_iters(local: int) -> int:
    """The evaluation length every rank uses: the largest any rank computed (ranks that hold no data say 0)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.tensor([local], dtype=torch.long, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


class DatasetsProvider:
    """Megatron's ``train_valid_test_datasets_provider`` for one launch's :class:`MixtureSource`.

    ``(train, valid, None)``; sets ``args.eval_iters`` to one pass over valid.
    """

    # Every rank calls the provider (megatron-core's builder synchronises them); builds_on_this_rank decides
    # who reads.
    is_distributed = True

    def __init__(self, source: MixtureSource) -> None:
        self.source = source

    def __call__(self, train_val_test_num_samples, vp_stage=None):
        from megatron.training import get_args, print_rank_0

        args = get_args()
        print_rank_0(f"> regmix: building datasets from {self.source.path} ...")
        here = builds_on_this_rank(vp_stage)
        ds = build_for_args(args, train_val_test_num_samples[0], build_on_this_rank=here, source=self.source)
        valid = None
        if here:
            print_rank_0(f"> regmix: train samples per domain {ds.train_counts()}")
            valid = FixedValidationSet(list(ds.valid.values()), batch=args.eval_global_batch_size)
        if args.eval_iters:  # --eval-iters 0 turns evaluation off, as in stock Megatron
            args.eval_iters = agree_on_eval_iters(valid.batches if valid is not None else 0)
            if valid is not None:
                print_rank_0(f"> regmix: each evaluation reads {valid.samples} validation sequences of "
                             f"{len(ds.valid)} domains once (+{valid.period - valid.samples} padding): "
                             f"--eval-iters {args.eval_iters}")
        else:
            valid = None
        return ds.train, valid, None
