"""Megatron-LM GPT pretraining with the data mixture from a regmix.json.

    torchrun ... -m regmix_plugin.megatron.pretrain_gpt <Megatron-LM GPT flags> --data-mixture-from regmix.json

Everything else is stock ``megatron.training``: argument parsing and validation, GPTModelConfig, ``pretrain``.
The plugin supplies the extra flags, the dataset provider (train blend + a fixed per-domain validation set), a
forward step that tallies losses per domain, and the hook that reports ``valid/<domain>/loss``. What it sets
on the way (implementation flags without Transformer Engine/apex, ``CUDA_DEVICE_MAX_CONNECTIONS``, the
prebuilt dataset helpers, a schedule's resume point) is in :mod:`regmix_plugin.megatron.launch` and is printed.

With ``--data-schedule-from`` the phase transitions become ``--phase-transition-iterations``: Megatron saves
and exits at each one, and the same command is relaunched; each launch trains one phase, and a launch after
the last phase exits at once.
"""

from __future__ import annotations

import os
import sys

from regmix_plugin.errors import ConfigError, RegmixError, one_line
from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.megatron.environment import check_megatron_core
from regmix_plugin.megatron.launch import prepare_launch, resume_schedule, use_prebuilt_dataset_helpers


def _say(line: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"> regmix: {line}", flush=True)


def components(args):
    """``(datasets_provider, forward_step)`` for ``pretrain``, after checking the plugin's flags.

    With per-domain evaluation on it also installs the evaluation hook. A team's own pretrain_gpt.py calls this
    after ``parse_and_validate_args(extra_args_provider=add_regmix_args)``; see docs/megatron.md.
    """
    from regmix_plugin.megatron.datasets import DatasetsProvider, MixtureSource
    from regmix_plugin.megatron.hooks import install_evaluation_hook
    from regmix_plugin.megatron.loss import DomainTally, make_forward_step

    check_regmix_args(args)
    if not (args.data_mixture_from or args.data_schedule_from):
        raise ConfigError("--data-mixture-from: missing; give the regmix.json to train on (or --data-schedule-from)")
    source = MixtureSource.from_args(args)  # the one read of the mixture (or schedule) in this process
    tally = None
    if args.regmix_per_domain_eval:
        tally = DomainTally(source.names)
        install_evaluation_hook(tally, source)
    return DatasetsProvider(source), make_forward_step(tally)


def main(argv: list[str] | None = None) -> None:
    # Before megatron-core is imported: its version (a --no-deps install enforces no pin) and what Transformer
    # Engine and apex offer (a broken TE makes importing megatron-core itself fail with a deep traceback).
    note = check_megatron_core()
    if note:
        _say(note)
    launch = prepare_launch(sys.argv[1:] if argv is None else argv)
    for note in launch.notes:
        _say(note)

    from megatron.core.enums import ModelType
    from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
    from megatron.training.arguments import parse_and_validate_args
    from megatron.training.training import pretrain

    use_prebuilt_dataset_helpers()
    sys.argv = [sys.argv[0], *launch.argv]
    args = parse_and_validate_args(extra_args_provider=add_regmix_args,
                                   args_defaults={"tokenizer_type": "GPT2BPETokenizer"})
    provider, forward_step = components(args)
    if args.data_schedule_from:
        go, notes = resume_schedule(args)
        for note in notes:
            _say(note)
        if not go:
            return
    pretrain(pretrain_cfg_container_from_args(args, gpt_config_from_args(args)), provider,
             ModelType.encoder_or_decoder, forward_step)


if __name__ == "__main__":
    try:
        main()
    except RegmixError as e:
        # One line on every rank that fails, exit 2: the same contract as the regmix CLI.
        print(f"regmix: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
