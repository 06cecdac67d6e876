"""`regmix collect`: a thin adapter from argparse to the collector (collect/runs_table.py)."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
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
    p.add_argument("--marin", action="append", default=[], metavar="CSV",
                   help="import a Marin-style schedule swarm: phase_<k>_<domain> weight columns and metric columns "
                        "(docs/phases.md); the phases begin at --phases")
    p.add_argument("--phases", default="0.8", help="with --marin: where phases 1.. begin, as fractions of training "
                                                   "(default 0.8, Marin's two-phase switch)")
    p.add_argument("--mixtures", metavar="FILE", help="CSV/TSV of run and one weight column per training domain, "
                   "for runs whose directory or curve file carries no mixture")
    p.add_argument("--lm-eval", action="append", default=[], metavar="DIR",
                   help="import lm-evaluation-harness results: one subfolder per run (its name is the run id), the "
                        "newest results_*.json in it; columns lmeval/<task>/<metric> (+ _stderr), joined to the run's "
                        "directory, --climb-mixtures or --mixtures")
    p.add_argument("--climb-mixtures", action="append", default=[], metavar="DIR",
                   help="folder of CLIMB mixture scripts (n<K>.sh) giving the weights of --lm-eval runs")
    p.add_argument("--climb", action="append", default=[], metavar="DIR",
                   help="import a whole CLIMB working folder: every round's mixtures_K/n<i>.sh with its "
                        "lm_eval_results_K/n<i> (run ids r<K>_n<i>, a round column)")
    p.add_argument("--climb-csv", action="append", default=[], metavar="FILE",
                   help="import CLIMB's lm_harness_results.csv (8_predict.py's table)")
    p.set_defaults(func=_collect)


def _collect(args: argparse.Namespace) -> int:
    from regmix_plugin.collect.runs_table import collect, warnings_path, write_collected

    from regmix_plugin.errors import ConfigError

    try:
        phases = [float(x) for x in args.phases.split(",")]
    except ValueError:
        raise ConfigError(f"--phases: {args.phases!r} is not a list of fractions; give e.g. 0.8") from None
    if any(not 0 < b < 1 for b in phases) or any(b <= a for a, b in zip(phases, phases[1:])):
        raise ConfigError(f"--phases: {args.phases} must be increasing fractions in (0, 1), e.g. 0.8")
    df, warnings = collect(args.run_dirs, step=args.step, regmix=args.regmix, olmix=args.olmix, curves=args.curves,
                           marin=args.marin, phases=phases,
                           mixtures=args.mixtures, lm_eval=args.lm_eval, climb_mixtures=args.climb_mixtures,
                           climb=args.climb, climb_csv=args.climb_csv)
    write_collected(df, warnings, args.out)
    for w in warnings:
        print(f"regmix collect: warning: {w}", file=sys.stderr)
    extra = f"; {len(warnings)} warning(s) in {warnings_path(args.out)}" if warnings else ""
    print(f"{args.out}: {len(df)} runs{extra}")
    return 0
