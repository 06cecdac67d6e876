"""``regmix continual sweep|fit``: a thin CLI over `regmix_plugin.continual.replay`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regmix_plugin.errors import ConfigError
from regmix_plugin.io import json_safe


def register(sub) -> None:
    cont = sub.add_parser("continual", help="continual pretraining: replay proportion sweep and its critical value")
    cs = cont.add_subparsers(dest="continual_command", metavar="SUBCOMMAND")
    cs.required = True

    p = cs.add_parser("sweep", help="write continual-training mixtures over a proportion grid and a study YAML")
    p.add_argument("--original", required=True, help="mixture of the original (base) data, e.g. the base run's")
    p.add_argument("--new", required=True, help="mixture of the new data")
    p.add_argument("--base-ckpt", required=True, help="the base checkpoint (folder or run directory) every run starts from")
    p.add_argument("--config", required=True, help="proxy trainer config of the continual runs")
    p.add_argument("--out", required=True, help="folder: mixtures/, continual.json, study.yaml (runs/ once swept)")
    p.add_argument("--proportions", default="0,0.2,0.4,0.6,0.8",
                   help="comma-separated replay proportions in [0, 1] (share of original data); >= 3")
    p.add_argument("--base-run", help="the base run directory (its final eval gives the pre-continual loss)")
    p.add_argument("--backend", default="local", choices=("local", "slurm"))
    p.add_argument("--max-concurrent", type=int, default=1, help="local backend: runs at once")
    p.set_defaults(func=run_continual_sweep)

    p = cs.add_parser("fit", help="fit old/new-domain loss against the replay proportion; report the critical one")
    p.add_argument("--plan", required=True, help="the sweep folder (or its continual.json)")
    p.add_argument("--runs", help="runs table of the continual runs (default: collect PLAN/runs)")
    p.add_argument("--base-loss", type=float, help="pre-continual old-domain loss (default: the base run's final eval)")
    p.add_argument("--base-run", help="base run directory (default: the plan's)")
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed rise of the old-domain loss, in nats")
    p.add_argument("--safety", type=float, default=1.0,
                   help="keep the predicted old loss this many fit-residual SDs below the target (default 1; 0: point estimate)")
    p.add_argument("--out", help="folder for continual_fit.json, continual.png, report.md (default: the plan folder)")
    p.set_defaults(func=run_continual_fit)


def run_continual_sweep(args: argparse.Namespace) -> int:
    from regmix_plugin.continual.replay import STUDY_FILE, SweepConfig, write_sweep

    try:
        grid = [float(x) for x in args.proportions.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--proportions: {args.proportions!r} is not a comma-separated list of numbers") from None
    cfg = SweepConfig(proxy_config=args.config, proportions=grid, backend=args.backend,
                      max_concurrent=args.max_concurrent)
    plan = write_sweep(args.original, args.new, args.base_ckpt, args.out, cfg, base_run=args.base_run)
    out = Path(args.out)
    print(f"wrote {len(plan.mixtures)} continual mixtures (p = {', '.join(f'{p:g}' for p in plan.proportions)}) "
          f"under {out / 'mixtures'}")
    print(f"next: regmix sweep {out / STUDY_FILE}   then: regmix continual fit --plan {out}")
    return 0


def run_continual_fit(args: argparse.Namespace) -> int:
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.continual.replay import (
        ContinualFitConfig,
        ContinualPlan,
        fit_continual,
        final_losses,
        points_from_table,
    )
    from regmix_plugin.report.builder import Report
    from regmix_plugin.continual.figures import continual_figure
    from regmix_plugin.collect.runs_table import collect
    from regmix_plugin.table import read_runs

    plan_path = Path(args.plan)
    plan_dir = plan_path if plan_path.is_dir() else plan_path.parent
    plan = ContinualPlan.load(plan_path)
    spec = plan.spec(plan_dir)
    if args.runs:
        table = read_runs(args.runs)
    else:
        if not (plan_dir / "runs").is_dir():
            raise ConfigError(f"--runs: no runs under {plan_dir / 'runs'}; run `regmix sweep {plan_dir / 'study.yaml'}` first")
        table, notes = collect([plan_dir / "runs"])
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    base_loss = args.base_loss
    if base_loss is None:
        base_run = args.base_run or plan.base_run
        if not base_run:
            raise ConfigError("--base-loss/--base-run: give the pre-continual old-domain loss or the base run directory")
        base_loss = spec.old_loss(final_losses(base_run))
    result = fit_continual(points_from_table(table, spec), base_loss, ContinualFitConfig(tolerance=args.tolerance, safety=args.safety))
    out = Path(args.out) if args.out else plan_dir
    atomic_write_json(out / "continual_fit.json", json_safe(result.to_dict()))
    report = Report("Continual training: replay proportion", out)
    report.add_paragraph(result.summary())
    report.add_table([{"p": r.proportion, "old-domain loss": r.old_loss, "new-domain loss": r.new_loss}
                      for r in result.points.itertuples()])
    report.add_paragraph(
        f"old: L(p) = {result.old_law.c:.4g} + {result.old_law.k:.4g} exp({result.old_law.t:.4g} p); "
        f"new: L(p) = {result.new_law.c:.4g} + {result.new_law.k:.4g} exp({result.new_law.t:.4g} p)")
    report.add_figure(continual_figure(result), "continual", "old/new-domain loss against the replay proportion")
    md, _ = report.write("continual_report.md", "continual_report.html")
    print(result.summary())
    print(f"wrote {out / 'continual_fit.json'}, {md}")
    return 0
