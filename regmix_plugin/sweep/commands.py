"""`regmix synthesize`, `regmix sweep`, `regmix collect`: thin adapters from argparse to the sweep library."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from regmix_plugin.config_schema import read_yaml_file
from regmix_plugin.errors import ConfigError
from regmix_plugin.mixture import Mixture

# Every scalar setting of the sampler gets a flag of its own, read from its config class; these two take a
# mapping or a list (`--nonzero` is parsed below, prior_weights only in a file).
_NO_FLAG = {"prior_weights", "nonzero"}


def _synth_flags() -> list[str]:
    from dataclasses import fields

    from regmix_plugin.sweep.synth_config import SynthConfig

    return [f.name for f in fields(SynthConfig) if f.name not in _NO_FLAG]


def _scalar(text: str):
    """A flag's value as the YAML file would hold it (int, float or text); SynthConfig checks it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() in ("null", "none") else text


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="sample proxy mixtures (RegMix's sampler) into n0001.json ...",
                       description="Sample proxy mixtures over a base mixture's domains. Settings come from "
                                   "--config (YAML), then from the flags. See docs/sweeps.md.")
    p.add_argument("base", help="base mixture (e.g. a corpus's natural.json): the domains, prefixes and tokens")
    p.add_argument("--out", required=True, help="folder for n*.json, heldout/h*.json, weights.csv, manifest.json")
    p.add_argument("--config", help="YAML mapping of sampler settings (the `synthesize:` block of a study)")
    p.add_argument("--overwrite", action="store_true", help="replace mixtures already in --out")
    for name in _synth_flags():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=_scalar, default=None,
                       help=f"synthesize.{name} (see docs/sweeps.md)")
    p.add_argument("--nonzero", help="comma-separated domains (or 'all') that always get weight >= minimum")
    p.add_argument("--no-max-usage", action="store_true", help="disable the max_usage rejection bound")
    p.set_defaults(func=_synthesize)

    p = sub.add_parser("sweep", help="run a proxy sweep described by a study YAML (local or Slurm), resumably",
                       description="Run every mixture of a study; rerunning skips finished runs and restarts "
                                   "dead ones. See docs/sweeps.md and megatron_configs/study-*.yaml.")
    p.add_argument("study", help="study YAML")
    p.add_argument("--retry-failed", action="store_true", help="give runs that ran out of retries another round")
    p.add_argument("--backend", choices=("local", "slurm"), help="override the study's backend")
    p.add_argument("--max-concurrent", type=int, help="override local.max_concurrent")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--prepare-only", action="store_true", help="write run directories and sweep.json, run nothing")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("collect", help="collect run directories (and RegMix/Olmix CSVs) into one runs table",
                       description="One row per run: run_id, status, weight/<domain>, valid/<set>/<metric> at one "
                                   "step, train/loss, tokens. Problems go to <out stem>.warnings.txt.")
    p.add_argument("run_dirs", nargs="*", help="run directories, folders of them, or a sweep's out folder")
    p.add_argument("--out", required=True, help="runs table to write (.csv, or .parquet)")
    p.add_argument("--step", type=int, help="evaluation step to report (default: last step common to completed runs)")
    p.add_argument("--regmix", nargs=2, action="append", default=[], metavar=("MIXTURE_CSV", "LOSS_CSV"),
                   help="import RegMix's CSV pair (joined on index)")
    p.add_argument("--olmix", nargs=2, action="append", default=[], metavar=("RATIOS_CSV", "METRICS_CSV"),
                   help="import an Olmix *_ratios.csv / *_metrics.csv pair (joined on run)")
    p.add_argument("--curves", action="append", default=[], metavar="FILE",
                   help="import a long CSV/TSV of run, step, metric, value rows (a W&B or spreadsheet export)")
    p.add_argument("--mixtures", metavar="FILE", help="CSV/TSV of run and one weight column per training domain, "
                   "for runs whose directory or curve file carries no mixture")
    p.set_defaults(func=_collect)


def synth_config_from_args(args: argparse.Namespace):
    from regmix_plugin.sweep.synth_config import SynthConfig

    data = {}
    if args.config:
        data = read_yaml_file(args.config, f"--config {args.config}") or {}
        if isinstance(data, dict) and isinstance(data.get("synthesize"), dict):
            data = data["synthesize"]  # a whole study file works too
    if not isinstance(data, dict):
        raise ConfigError(f"--config {args.config}: expected a mapping of sampler settings")
    for name in _synth_flags():
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.nonzero:
        data["nonzero"] = "all" if args.nonzero == "all" else [x for x in args.nonzero.split(",") if x]
    if args.no_max_usage:
        data["max_usage"] = None
    return SynthConfig.from_dict(data)


def _synthesize(args: argparse.Namespace) -> int:
    from regmix_plugin.sweep.synthesize import write_synthesis

    cfg = synth_config_from_args(args)
    man = write_synthesis(cfg, Mixture.load(args.base), args.out, overwrite=args.overwrite)
    n_train = sum(1 for e in man["mixtures"] if e["split"] == "train")
    s = man["stats"]
    print(f"{args.out}: {n_train} mixtures + {len(man['mixtures']) - n_train} held out over "
          f"{len(man['domains'])} domains ({s['candidates']} draws, {s['rejected']} rejected by caps, "
          f"{s['duplicates']} duplicates)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from regmix_plugin.sweep.launch import prepare, sweep
    from regmix_plugin.sweep.study import load_study

    study = load_study(args.study)
    if args.backend:
        study.backend = args.backend
    if args.max_concurrent is not None:
        # only that key: the rest of the study's `local` section (preload) stays as written
        study.local = dataclasses.replace(study.local, max_concurrent=args.max_concurrent)
    if args.prepare_only:
        prep = prepare(study)
        print(f"{prep.spec_path}: {len(prep.run_ids)} runs prepared")
        return 0
    return sweep(study, retry_failed=args.retry_failed, progress=not args.no_progress)


def _collect(args: argparse.Namespace) -> int:
    from regmix_plugin.sweep.collect import collect, warnings_path, write_collected

    df, warnings = collect(args.run_dirs, step=args.step, regmix=args.regmix, olmix=args.olmix, curves=args.curves,
                           mixtures=args.mixtures)
    write_collected(df, warnings, args.out)
    for w in warnings:
        print(f"regmix collect: warning: {w}", file=sys.stderr)
    extra = f"; {len(warnings)} warning(s) in {warnings_path(args.out)}" if warnings else ""
    print(f"{args.out}: {len(df)} runs{extra}")
    return 0
