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
    if getattr(args, "mock_data", False):
        raise ConfigError("--mock-data: not allowed with --data-mixture-from; drop one of them")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (args.data_cache_path or args.save):
        raise ConfigError("--data-cache-path: needed with several ranks and no --save (all ranks read megatron-core's "
                          "index cache); give a folder every rank can see")
    if args.data_schedule_from and args.train_samples is None:
        # megatron 0.19's get_train_valid_test_num_samples computes phase sizes from args.train_samples and
        # fails with a TypeError when training is given in iterations (checked against the installed wheel).
        raise ConfigError("--train-iters: a --data-schedule-from run needs --train-samples N (Megatron's phase "
                          "transitions count samples); give --train-samples = iterations x global batch size")
    n = args.regmix_valid_samples_per_domain
    if n is not None and n < 1:
        raise ConfigError(f"--regmix-valid-samples-per-domain: {n} is not positive; give N >= 1")
