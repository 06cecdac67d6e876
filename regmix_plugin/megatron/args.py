"""The plugin's Megatron-LM flags, added through ``extra_args_provider``.

``parse_and_validate_args(extra_args_provider=add_regmix_args)`` accepts::

    --data-mixture-from PATH          a regmix.json: the train blend and the per-domain validation sets
    --data-schedule-from PATH         a multi-phase schedule (see regmix_plugin.schedule) instead
    --regmix-metrics-dir DIR          where metrics.jsonl and tb/ with valid/<domain>/loss go (default: --save)
    --regmix-per-domain-eval / --no-regmix-per-domain-eval
                                      report valid/<domain>/loss during evaluation (default: on)
    --regmix-valid-samples-per-domain N
                                      validation sequences per domain (default: one epoch of each)
"""

from __future__ import annotations

import argparse
import os

from regmix_plugin.errors import ConfigError

_STOCK_DATA_FLAGS = ("data_path", "train_data_path", "valid_data_path", "test_data_path", "data_args_path",
                     "per_split_data_args_path")


def add_regmix_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``extra_args_provider`` for Megatron-LM: adds the regmix group and returns the parser."""
    g = parser.add_argument_group(title="regmix", description="data mixture from regmix_plugin")
    g.add_argument("--data-mixture-from", type=str, default=None, metavar="PATH",
                   help="regmix.json: train blend and per-domain validation sets (replaces --data-path)")
    g.add_argument("--data-schedule-from", type=str, default=None, metavar="PATH",
                   help="multi-phase schedule YAML; sets --phase-transition-iterations, one mixture per phase")
    g.add_argument("--regmix-metrics-dir", type=str, default=None, metavar="DIR",
                   help="write metrics.jsonl and tb/ with valid/<domain>/loss here (default: --save)")
    g.add_argument("--regmix-per-domain-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="report valid/<domain>/loss at every evaluation")
    g.add_argument("--regmix-valid-samples-per-domain", type=int, default=None, metavar="N",
                   help="validation sequences per domain (default: one epoch of each domain's validation set)")
    return parser


def check_regmix_args(args: argparse.Namespace) -> None:
    """Cross-flag checks that Megatron's own validation cannot know about."""
    if args.data_mixture_from and args.data_schedule_from:
        raise ConfigError("--data-mixture-from/--data-schedule-from: give one of them, not both")
    if not (args.data_mixture_from or args.data_schedule_from):
        return
    given = [f for f in _STOCK_DATA_FLAGS if getattr(args, f, None)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag}: not allowed with --data-mixture-from; the mixture file replaces it")
    for flag, why in _UNSUPPORTED.items():
        if getattr(args, flag.lstrip("-").replace("-", "_"), False):
            raise ConfigError(f"{flag}: not allowed with --data-mixture-from; {why}")
    if args.eval_interval is None:
        # megatron 0.19 divides by it when sizing the validation split (get_train_valid_test_num_samples).
        raise ConfigError("--eval-interval: missing; give how many iterations apart to evaluate the per-domain "
                          "validation losses (Megatron 0.19 fails without it)")
    if (args.dataloader_type or "single") != "single":
        raise ConfigError(f"--dataloader-type {args.dataloader_type}: the mixture's blend is already shuffled and its "
                          "validation set is read in order once per evaluation; drop the flag (single)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (args.data_cache_path or args.save):
        raise ConfigError("--data-cache-path: needed with several ranks and no --save (all ranks read megatron-core's "
                          "index cache); give a folder every rank can see")
    if args.data_schedule_from:
        if args.train_samples is None:
            # megatron 0.19's get_train_valid_test_num_samples computes phase sizes from args.train_samples and
            # fails with a TypeError when training is given in iterations (checked against the installed wheel).
            raise ConfigError("--train-iters: a --data-schedule-from run needs --train-samples N (Megatron's phase "
                              "transitions count samples); give --train-samples = iterations x global batch size")
        if not args.save:
            raise ConfigError("--save: a --data-schedule-from run needs --save; Megatron saves and exits at each "
                              "phase transition and the relaunch resumes from there")
        if args.rampup_batch_size:
            raise ConfigError("--rampup-batch-size: not allowed with --data-schedule-from; Megatron's phase "
                              "transitions count iterations x a fixed global batch size")
    n = args.regmix_valid_samples_per_domain
    if n is not None and n < 1:
        raise ConfigError(f"--regmix-valid-samples-per-domain: {n} is not positive; give N >= 1")


# Flags whose datasets or evaluation the mixture's provider does not build, with what to do instead. With the
# flags it honours (regmix_plugin.megatron.datasets.gpt_dataset_options) these cover every data flag that
# Megatron-LM's pretrain_gpt.py reads into its GPTDatasetConfig (checked against megatron-core 0.19.2's
# arguments.py): none is accepted and then ignored.
_INDEX_READ = ("the plugin reads every domain's .idx at launch anyway (token counts and per-domain sample tags), so "
               "this startup shortcut has nothing to skip; drop the flag")
_UNSUPPORTED = {
    "--mock-data": "drop one of them",
    "--sft": "the mixture builds pretraining GPT datasets; use Megatron's own SFT data flags",
    "--fim-data": "the mixture builds plain GPT datasets; use Megatron's own --data-path for FIM",
    "--dataloader-inter-document-masking": "its packed-sequence batches are not built by the mixture's provider",
    "--hybrid-context-parallel": "its batches carry packed-sequence metadata the mixture's datasets do not build; "
                                 "use --context-parallel-size",
    "--full-validation": "every evaluation already reads each domain's whole validation set once; drop the flag",
    "--multiple-validation-sets": "the plugin reports one loss per domain (valid/<domain>/loss); drop the flag",
    "--validation-set-names": "validation sets are the mixture's domains, named by it; drop the flag",
    "--split": "the train blend uses all of each training prefix and validation comes from each domain's "
               "valid_prefixes in the mixture file; drop the flag",
    "--object-storage-cache-path": "the mixture's prefixes are local .bin/.idx files (regmix.json); drop the flag",
    "--dataloader-fast-cache-load": _INDEX_READ,
    "--dataloader-defer-npy-index-mmap": _INDEX_READ,
    "--per-dataset-sequences-path": _INDEX_READ,
    "--allow-ambiguous-pad-tokens": "the mixture's datasets mask no pad tokens (its tokenizer record has no pad id), "
                                    "so the flag would change nothing; drop it",
}
