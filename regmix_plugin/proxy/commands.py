"""``regmix train``: train one proxy model on a mixture (or a multi-phase schedule) into a run directory."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add this stage's subcommands to the `regmix` parser."""
    p = sub.add_parser(
        "train",
        help="train a proxy model (megatron-core GPTModel, CPU or GPU) on a mixture",
        description="Train a megatron-core GPTModel on a mixture; writes metrics.jsonl, tb/, checkpoints/, "
        "config.yaml and outcome.json into --run-dir. Data parallel: torchrun --nproc-per-node N -m regmix_plugin train ...",
    )
    p.add_argument("--mixture", help="regmix.json to train on (or give --schedule)")
    p.add_argument("--schedule", help="multi-phase schedule YAML: {phases: [{start: 0, mixture: a.json}, ...]}")
    p.add_argument("--config", required=True, help="proxy config YAML, e.g. megatron_configs/proxy-tiny-cpu.yaml")
    p.add_argument("--run-dir", required=True, help="output folder of this run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=20 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--init-from", metavar="CKPT_DIR",
                   help="start from these model weights (fresh optimizer and step): continual pretraining")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from regmix_plugin.errors import ConfigError
    from regmix_plugin.proxy.config import ProxyConfig
    from regmix_plugin.schedule import Schedule

    if (args.mixture is None) == (args.schedule is None):
        raise ConfigError("--mixture/--schedule: give exactly one of them")
    if args.resume and args.init_from:
        raise ConfigError("--init-from: not allowed with --resume (a resumed run restores its own weights)")
    cfg = ProxyConfig.load(args.config, args.overrides)
    schedule = Schedule.load(args.schedule) if args.schedule else Schedule.single(args.mixture)
    # A schedule synthesized or optimised for any length gives its boundaries as fractions of training.
    schedule = schedule.resolve(cfg.train.steps)

    from regmix_plugin.proxy.trainer import train  # imports megatron-core: keep `regmix --help` fast

    outcome = train(cfg, schedule, args.run_dir, resume=args.resume, init_from=args.init_from)
    if outcome.status != "completed":
        import sys

        print(f"regmix train: failed: {outcome.reason}", file=sys.stderr)
        return 1
    return 0
