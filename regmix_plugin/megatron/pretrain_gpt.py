"""Megatron-LM GPT pretraining with the data mixture from a regmix.json.

    torchrun ... -m regmix_plugin.megatron.pretrain_gpt <Megatron-LM GPT flags> --data-mixture-from regmix.json

Everything else is stock ``megatron.training``: argument parsing and validation, GPTModelConfig, ``pretrain``.
The plugin supplies the extra flags, the dataset provider (train blend + per-domain validation), and a
forward step whose loss report carries ``valid/<domain>/loss``. With per-domain evaluation on, the whole
validation set is read at every evaluation (``--full-validation``), so each domain's loss is over the same
tokens every time. With ``--data-schedule-from`` the phase transitions become ``--phase-transition-iterations``
and the same command is relaunched after each transition (Megatron exits there by design).
"""

from __future__ import annotations

import sys

from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.schedule import Schedule


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def prepare_argv(argv: list[str]) -> list[str]:
    """Add the stock flags that the plugin's flags imply, unless the user set them."""
    argv = list(argv)
    schedule = _flag_value(argv, "--data-schedule-from")
    if schedule and _flag_value(argv, "--phase-transition-iterations") is None:
        argv += Schedule.load(schedule).megatron_args()
    if "--no-regmix-per-domain-eval" not in argv and "--full-validation" not in argv:
        argv.append("--full-validation")
    return argv


def main(argv: list[str] | None = None) -> None:
    from megatron.core.enums import ModelType
    from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
    from megatron.training.arguments import parse_and_validate_args
    from megatron.training.training import pretrain

    from regmix_plugin.megatron.datasets import mixture_for_iteration, train_valid_test_datasets_provider
    from regmix_plugin.megatron.hooks import install_metrics_hook
    from regmix_plugin.megatron.loss import make_forward_step

    sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:] if argv is None else argv)]
    args = parse_and_validate_args(extra_args_provider=add_regmix_args,
                                   args_defaults={"tokenizer_type": "GPT2BPETokenizer"})
    check_regmix_args(args)
    domain_names = None
    if args.data_mixture_from or args.data_schedule_from:
        mixture = mixture_for_iteration(args)
        if args.regmix_per_domain_eval:
            domain_names = mixture.names
            install_metrics_hook()
    pretrain(
        pretrain_cfg_container_from_args(args, gpt_config_from_args(args)),
        train_valid_test_datasets_provider,
        ModelType.encoder_or_decoder,
        make_forward_step(domain_names),
    )


if __name__ == "__main__":
    main()
