"""Megatron-LM's ``train_valid_test_datasets_provider`` for ``--data-mixture-from`` / ``--data-schedule-from``.

The train split is the mixture's blend (weight-0 domains left out), built for the number of samples Megatron
asks for (with ``--phase-transition-iterations``: the samples of the current phase). The validation split is
one dataset concatenating every domain's validation set (items carry ``dataset_id`` = domain index), meant to
be read whole at each evaluation with ``--full-validation``; the loss function splits it back by domain.
"""

from __future__ import annotations

import argparse
import os

from regmix_plugin.data.blend import BlendConfig, MixtureDatasets, build_datasets
from regmix_plugin.data.tokenizer import TokenizerInfo, infer_tokenizer
from regmix_plugin.mixture import Mixture
from regmix_plugin.schedule import Schedule


def mixture_for_iteration(args: argparse.Namespace) -> Mixture:
    """The mixture that trains ``args.iteration`` (the iteration Megatron resumed from, 0 on a fresh start)."""
    if args.data_schedule_from:
        schedule = Schedule.load(args.data_schedule_from)
        return schedule.phases[schedule.phase_index(getattr(args, "iteration", 0) or 0)].load()
    return Mixture.load(args.data_mixture_from)


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


def build_for_args(args: argparse.Namespace, train_samples: int) -> MixtureDatasets:
    mixture = mixture_for_iteration(args)
    return build_datasets(mixture, BlendConfig(
        seq_length=args.seq_length,
        train_samples=max(int(train_samples), 1),
        valid_samples_per_domain=args.regmix_valid_samples_per_domain,
        seed=args.seed,
        cache_dir=cache_dir(args),
        tokenizer=tokenizer_info(args, mixture),
        eod_mask_loss=args.eod_mask_loss,
        create_attention_mask=args.create_attention_mask_in_dataloader,
        mid_level_dataset_surplus=args.mid_level_dataset_surplus,
    ))


def train_valid_test_datasets_provider(train_val_test_num_samples, vp_stage=None):
    """``(train, valid, test)`` for Megatron's ``pretrain``; test is None (per-domain test sets are not built)."""
    from megatron.training import get_args, print_rank_0

    args = get_args()
    print_rank_0(f"> regmix: building datasets from {args.data_schedule_from or args.data_mixture_from} ...")
    ds = build_for_args(args, train_val_test_num_samples[0])
    print_rank_0(f"> regmix: train samples per domain {ds.train_counts()}")
    return ds.train, ds.valid_concat, None


# Megatron builds on every rank when the provider says so; megatron-core's builder coordinates the cache.
train_valid_test_datasets_provider.is_distributed = True
