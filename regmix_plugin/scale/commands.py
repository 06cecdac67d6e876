"""``regmix scale fit|predict|rank-check`` and ``regmix continual sweep|fit``: thin CLIs over
`regmix_plugin.fit.scaling` and `regmix_plugin.optimize.continual`."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from regmix_plugin.errors import ConfigError

# Figures for at most this many runs: a sweep of hundreds would otherwise write hundreds of PNGs.
MAX_RUN_FIGURES = 12


def register(sub) -> None:
    scale = sub.add_parser("scale", help="scaling laws across training length and model size (Data Mixing Laws)",
                           description="Step and size laws, nested prediction and the rank-invariance check.")
    ss = scale.add_subparsers(dest="scale_command", metavar="SUBCOMMAND")
    ss.required = True

    p = ss.add_parser("fit", help="fit per-domain step laws on runs' metrics.jsonl; extrapolate to a longer run")
    p.add_argument("run_dirs", nargs="+", help="run directories, folders of them, or a sweep's out folder")
    p.add_argument("--target", type=float, required=True, help="step (or --axis tokens count) to extrapolate to")
    p.add_argument("--out", required=True, help="folder for extrapolated.csv, step_laws.json, report.md/.html + PNGs")
    p.add_argument("--axis", default="step", choices=("step", "tokens"), help="x of the law (default: step)")
    p.add_argument("--min-step", type=int, default=1, help="leave out evals before this step (warm-up transient)")
    p.add_argument("--max-step", type=int, help="leave out evals after this step (to test extrapolation)")
    p.add_argument("--shared-alpha", action="store_true", help="one exponent per run, shared by its domains")
    p.set_defaults(func=run_scale_fit)

    p = ss.add_parser("predict", help="size law across runs tables of several model sizes -> losses at a target size")
    p.add_argument("--scale", action="append", required=True, metavar="PARAMS=RUNS.csv",
                   help="non-embedding parameter count (1.2e7, 12M, 1.2B) and its runs table; repeat, >= 3 sizes")
    p.add_argument("--target-params", required=True, help="non-embedding parameters of the target model")
    p.add_argument("--out", required=True, help="runs table of predicted losses (.csv/.parquet); laws go beside it")
    p.add_argument("--actual", help="runs table measured at the target size: report errors and a figure")
    p.add_argument("--shared-alpha", action="store_true", help="one size exponent per mixture, shared by domains")
    p.set_defaults(func=run_scale_predict)

    p = ss.add_parser("rank-check", help="Spearman rho per domain between runs of the same mixtures at two scales")
    p.add_argument("small", help="runs table at the small scale")
    p.add_argument("large", help="runs table at the large scale")
    p.add_argument("--threshold", type=float, default=0.8, help="warn below this rho (default 0.8)")
    p.add_argument("--metric", action="append", help="metric column(s) to check (default: every valid/<d>/loss)")
    p.add_argument("--out", help="write the check as JSON here")
    p.set_defaults(func=run_rank_check)

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


# ---- scale -------------------------------------------------------------------------------------------------

def run_scale_fit(args: argparse.Namespace) -> int:
    from regmix_plugin.fit.scaling import StepFitConfig, extrapolate_steps, read_run_curve
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.figures import step_fit_figure
    from regmix_plugin.sweep.collect import find_run_dirs, read_run
    from regmix_plugin.table import write_runs

    cfg = StepFitConfig(axis=args.axis, min_step=args.min_step, max_step=args.max_step, shared_alpha=args.shared_alpha)
    notes: list[str] = []
    runs = {}
    for d in find_run_dirs(args.run_dirs, notes):
        if not (d / "metrics.jsonl").is_file():
            notes.append(f"{d.name}: no metrics.jsonl yet; skipped")
            continue
        # A running run's early curve is what a step law is for; a failed one may end in NaN or a crash.
        if read_run(d, []).status == "failed":
            notes.append(f"{d.name}: the run failed; skipped")
            continue
        weights, curve = read_run_curve(d)
        if weights is None:
            raise ConfigError(f"{d}: no mixture.json and no mixture in config.yaml; cannot tell the run's weights")
        runs[d.name] = (weights, curve)
    if not runs:
        raise ConfigError(f"RUN_DIR: no run with metrics among {', '.join(args.run_dirs)}")
    table, laws = extrapolate_steps(runs, args.target, cfg)
    out = Path(args.out)
    write_runs(table, out / "extrapolated.csv")
    atomic_write_json(out / "step_laws.json", {
        "law": "L(x) = E + (x0/x)^alpha", "axis": args.axis, "target": args.target, "min_step": args.min_step,
        "max_step": args.max_step, "shared_alpha": args.shared_alpha,
        "runs": {r: {d: law.to_dict() for d, law in per.items()} for r, per in laws.items()},
    })
    rows = []
    for run_id, (_, curve) in runs.items():
        for dom, law in laws[run_id].items():
            rows.append({"run": run_id, "domain": dom, "E": law.E, "alpha": law.alpha,
                         "last observed": float(curve[f"valid/{dom}/loss"].dropna().iloc[-1]),
                         "predicted at target": float(law.predict(args.target))})
    report = Report(f"Step laws ({len(runs)} runs)", out)
    report.add_paragraph(f"L({args.axis}) = E + ({args.axis}0/{args.axis})^alpha, fitted on evals from step "
                         f"{args.min_step} to {args.max_step or 'the end'}, extrapolated to {args.axis} {args.target:g}.")
    report.add_table(rows)
    for run_id, (_, curve) in list(runs.items())[:MAX_RUN_FIGURES]:
        fig = step_fit_figure(run_id, curve, laws[run_id], args.axis, (args.min_step, args.max_step), args.target)
        report.add_figure(fig, f"steps_{run_id}", f"{run_id}: loss vs {args.axis} with the fitted step laws")
    for n in notes:
        report.add_paragraph(f"note: {n}")
    report.write()
    print(_markdown_table(rows))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {out / 'extrapolated.csv'} (a runs table: `regmix fit --runs` or `regmix scale predict --scale`)")
    return 0


def _markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                      *["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]])


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str, where: str) -> float:
    """``1.2e7``, ``12M``, ``1.2B`` -> a positive float."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", text)
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a parameter count; write e.g. 1.2e7, 12M or 1.2B")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not value > 0:
        raise ConfigError(f"{where}: {text!r} must be > 0")
    return value


def run_scale_predict(args: argparse.Namespace) -> int:
    from regmix_plugin.fit.scaling import extrapolate_size, loss_columns, match_tables
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.table import read_runs, write_runs

    tables = {}
    for item in args.scale:
        if "=" not in item:
            raise ConfigError(f"--scale: {item!r} lacks '='; write PARAMS=RUNS.csv, e.g. 12M=runs_12m.csv")
        n_text, path = item.split("=", 1)
        n = parse_count(n_text, "--scale")
        if n in tables:
            raise ConfigError(f"--scale: size {n_text} given twice; give each model size once")
        tables[n] = read_runs(path)
    target = parse_count(args.target_params, "--target-params")
    pred, laws = extrapolate_size(tables, target, shared_alpha=args.shared_alpha)
    out = Path(args.out)
    write_runs(pred, out)
    doc = {"law": "L(N) = E + (N0/N)^alpha", "sizes": sorted(tables), "target_params": target,
           "runs": {r: {c: law.to_dict() for c, law in per.items()} for r, per in laws.items()}}
    print(f"wrote {out}: predicted losses of {len(pred)} mixtures at {target:.4g} non-embedding parameters")
    if args.actual:
        from scipy.stats import spearmanr

        from regmix_plugin.report.builder import Report
        from regmix_plugin.scale.figures import predicted_vs_actual_figure

        p, a = match_tables([pred, read_runs(args.actual)], ["prediction", "--actual"])
        cols = [c for c in loss_columns(p) if c in a.columns]
        rows = []
        print("| metric | mean abs error | mean rel error % | Spearman rho |\n|---|---|---|---|")
        for c in cols:
            err = (p[c] - a[c]).to_numpy(float)
            rho = float(spearmanr(p[c], a[c]).statistic) if len(p) >= 3 else math.nan
            rows.append({"metric": c, "mae": float(abs(err).mean()),
                         "mean_rel_error": float((abs(err) / a[c].to_numpy(float)).mean()), "spearman": rho})
            print(f"| {c} | {rows[-1]['mae']:.4f} | {100 * rows[-1]['mean_rel_error']:.2f} | {rho:.3f} |")
        doc["actual"] = {"path": str(args.actual), "errors": rows}
        fig = predicted_vs_actual_figure(p, a, cols, f"size law: predicted vs actual at {target:.3g}")
        report = Report(f"Size law: predicted vs actual at {target:.4g} parameters", out.parent)
        report.add_paragraph(f"Sizes fitted: {', '.join(f'{n:.4g}' for n in sorted(tables))}; actual: {args.actual}.")
        report.add_table(rows)
        report.add_figure(fig, out.stem + "_vs_actual", "predicted vs actual loss per mixture and domain")
        md, _ = report.write(out.stem + "_report.md", out.stem + "_report.html")
        print(f"wrote {md}")
    atomic_write_json(out.with_name(out.stem + "_size_laws.json"), _finite(doc))
    return 0


def _finite(obj):
    """JSON has no NaN: write null instead (e.g. a rho over constant losses)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def run_rank_check(args: argparse.Namespace) -> int:
    from regmix_plugin.fit.scaling import rank_invariance
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.table import read_runs

    check = rank_invariance(read_runs(args.small), read_runs(args.large), args.threshold, args.metric)
    print("| metric | Spearman rho | mixtures |\n|---|---|---|")
    for _, r in check.table.iterrows():
        print(f"| {r['metric']} | {r['rho']:.3f} | {r['n']} |")
    warning = check.warning()
    if warning:
        print(f"regmix: warning: {warning}", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, _finite({"threshold": check.threshold, "low": check.low, "warning": warning,
                                             "rows": check.table.to_dict(orient="records")}))
    return 0


# ---- continual -----------------------------------------------------------------------------------------

def run_continual_sweep(args: argparse.Namespace) -> int:
    from regmix_plugin.optimize.continual import STUDY_FILE, SweepConfig, write_sweep

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
    from regmix_plugin.optimize.continual import (
        ContinualFitConfig,
        ContinualPlan,
        fit_continual,
        final_losses,
        points_from_table,
    )
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.figures import continual_figure
    from regmix_plugin.sweep.collect import collect
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
    atomic_write_json(out / "continual_fit.json", _finite(result.to_dict()))
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
