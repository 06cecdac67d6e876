"""`regmix sweep`: a thin adapter from argparse to the sweep library (study file, launcher, backends)."""

from __future__ import annotations

import argparse
import dataclasses

from regmix_plugin.sweep.backend import available as available_backends


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a proxy sweep described by a study YAML (local or Slurm), resumably",
                       description="Run every mixture of a study; rerunning skips finished runs and restarts "
                                   "dead ones. See docs/sweeps.md and megatron_configs/study-*.yaml.")
    p.add_argument("study", help="study YAML")
    p.add_argument("--retry-failed", action="store_true", help="give runs that ran out of retries another round")
    p.add_argument("--backend", choices=available_backends(), help="override the study's backend")
    p.add_argument("--max-concurrent", type=int, help="override local.max_concurrent")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--prepare-only", action="store_true", help="write run directories and sweep.json, run nothing")
    p.set_defaults(func=_sweep)


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

