"""``regmix scale fit|predict|rank-check``: a thin CLI over `regmix_plugin.scale.laws`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.io import json_safe
from regmix_plugin.scale import MATCH_TOL

# Figures for at most this many runs: a sweep of hundreds would otherwise write hundreds of PNGs.
MAX_RUN_FIGURES = 12
# Rows of a results table printed to the terminal; the report has all of them.
MAX_PRINTED_ROWS = 24


def _alpha_flags(p, shared_help: str) -> None:
    p.add_argument("--alpha", choices=("auto", "shared", "per-metric"), default="auto",
                   help="exponent sharing (default auto: chosen by held-out data, printed and recorded)")
    p.add_argument("--shared-alpha", dest="alpha", action="store_const", const="shared",
                   help=f"same as --alpha shared: {shared_help}")


def register(sub) -> None:
    scale = sub.add_parser("scale", help="scaling laws across training length and model size (Data Mixing Laws)",
                           description="Step and size laws, nested prediction and the rank-invariance check.")
    ss = scale.add_subparsers(dest="scale_command", metavar="SUBCOMMAND")
    ss.required = True

    p = ss.add_parser("fit", help="fit step laws on runs' eval curves; extrapolate to longer runs")
    p.add_argument("run_dirs", nargs="*", help="run directories (metrics.jsonl or TensorBoard event files), folders "
                   "of them, or a sweep's out folder")
    p.add_argument("--curves", action="append", default=[], metavar="FILE",
                   help="long CSV/TSV of run, step, metric, value rows (a W&B or spreadsheet export); repeatable")
    p.add_argument("--mixtures", metavar="FILE", help="CSV/TSV of run and one weight column per training domain, for "
                   "runs whose directory or curve file carries no mixture")
    p.add_argument("--target", action="append", required=True, metavar="STEP[,STEP...]",
                   help="step (or --axis tokens count) to extrapolate to; several: comma-separated or repeated")
    p.add_argument("--out", required=True, help="folder for the extrapolated runs table(s), step_laws.json, "
                   "report.md/.html + PNGs")
    p.add_argument("--axis", default="step", choices=("step", "tokens"), help="x of the law (default: step)")
    p.add_argument("--min-step", type=int, help="leave out evals before this step (default: chosen by held-out tails)")
    p.add_argument("--max-step", type=int, help="leave out evals after this step (to test extrapolation)")
    _alpha_flags(p, "one exponent per run, shared by its metrics")
    p.add_argument("--metric", action="append", metavar="GLOB",
                   help="evaluation metrics to fit (default: every valid/<set>/<metric>); repeatable")
    p.add_argument("--params", metavar="COUNT|MODEL", help="non-embedding parameters of these runs, written to the "
                   "tables' params column (default: the runs' config.yaml, when they agree)")
    p.set_defaults(func=run_scale_fit)

    p = ss.add_parser("predict", help="size law across runs tables of several model sizes -> metrics at a target size")
    p.add_argument("--scale", action="append", required=True, metavar="[PARAMS=]RUNS.csv",
                   help="non-embedding parameter count (1.89e7) or known model (pythia-70m) and its runs table; "
                   "without PARAMS= the table's params column; repeat, >= 3 sizes")
    p.add_argument("--target-params", required=True, metavar="COUNT|MODEL",
                   help="non-embedding parameters of the target model, or a known model name")
    p.add_argument("--out", required=True, help="runs table of predicted metrics (.csv/.parquet); laws go beside it")
    p.add_argument("--actual", help="runs table measured at the target size: report errors, rankings and a figure")
    _alpha_flags(p, "one size exponent per mixture, shared by its metrics")
    p.add_argument("--metric", action="append", metavar="GLOB",
                   help="evaluation metrics to fit (default: every valid/<set>/<metric>); repeatable")
    p.add_argument("--match-tol", type=float, default=MATCH_TOL,
                   help=f"mixtures match when every normalised weight differs by at most this (default {MATCH_TOL:g})")
    p.set_defaults(func=run_scale_predict)

    p = ss.add_parser("rank-check", help="Spearman rho per metric between runs of the same mixtures at two scales")
    p.add_argument("small", help="runs table at the small scale")
    p.add_argument("large", help="runs table at the large scale")
    p.add_argument("--threshold", type=float, default=0.8, help="warn below this rho (default 0.8)")
    p.add_argument("--metric", action="append", help="metric column(s) or globs to check (default: every valid/<set>/<metric>)")
    p.add_argument("--match-tol", type=float, default=MATCH_TOL,
                   help=f"mixtures match when every normalised weight differs by at most this (default {MATCH_TOL:g})")
    p.add_argument("--out", help="write the check as JSON here")
    p.set_defaults(func=run_rank_check)


# ---- scale -------------------------------------------------------------------------------------------------

def _targets(values: list[str]) -> list[float]:
    out = []
    for v in values:
        for part in v.split(","):
            try:
                out.append(float(part))
            except ValueError:
                raise ConfigError(f"--target: {part!r} is not a number; write e.g. --target 5000 or --target 5000,10000") from None
    if len(set(out)) != len(out):
        raise ConfigError(f"--target: {', '.join(f'{t:g}' for t in out)} repeats a value; give each target once")
    return out


def _run_params(records, flag: str | None) -> tuple[float | None, str]:
    """The runs' non-embedding parameter count: --params, else their config.yaml's when all agree."""
    if flag:
        from regmix_plugin.scale.params import parse_params

        return parse_params(flag, "--params")
    import yaml

    counts = set()
    for rec in records:
        try:
            cfg = yaml.safe_load((rec.path / "config.yaml").read_text(encoding="utf-8"))
            counts.add(float(cfg["run"]["non_embedding_parameters"]))
        except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
            return None, "unknown (give --params to record it)"
    if len(counts) == 1:
        return counts.pop(), "from the runs' config.yaml"
    return None, "unknown: the runs' config.yaml files disagree"


def run_scale_fit(args: argparse.Namespace) -> int:
    from regmix_plugin.scale.laws import StepFitConfig, extrapolate_steps
    from regmix_plugin.sweep.curves import record_curve
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.figures import step_fit_figure
    from regmix_plugin.sweep.collect import load_records
    from regmix_plugin.table import write_runs

    targets = _targets(args.target)
    cfg = StepFitConfig(axis=args.axis, min_step=args.min_step, max_step=args.max_step, alpha=args.alpha,
                        metrics=tuple(args.metric) if args.metric else None)
    if not args.run_dirs and not args.curves:
        raise ConfigError("RUN_DIR: give run directories or --curves files")
    notes: list[str] = []
    runs, used = {}, []
    for rec in load_records(args.run_dirs, args.curves, args.mixtures, notes):
        # A running run's early curve is what a step law is for; a failed one may end in NaN or a crash.
        if rec.status == "failed":
            notes.append(f"{rec.run_id}: the run failed; skipped")
            continue
        curve = record_curve(rec)
        if len(curve) == 0:
            notes.append(f"{rec.run_id}: no evaluations yet; skipped")
            continue
        weights = rec.weights
        if weights is None:
            raise ConfigError(f"{rec.run_id}: no mixture (mixture.json, the mixture in config.yaml, weight/<domain> "
                              "columns, or a row in --mixtures); cannot tell the run's weights")
        if rec.run_id in runs:
            raise ConfigError(f"{rec.run_id}: two runs have this id; rename one (a run directory, or the run column)")
        runs[rec.run_id] = (weights, curve)
        used.append(rec)
    if not runs:
        raise ConfigError(f"RUN_DIR: no run with evaluations among {', '.join(args.run_dirs + args.curves)}")
    params, params_how = _run_params(used, args.params)
    result = extrapolate_steps(runs, targets, cfg)
    choice = result.choice
    out = Path(args.out)
    files = {}
    for t, table in result.tables.items():
        if params is not None:
            table["params"] = params
        name = "extrapolated.csv" if len(targets) == 1 else f"extrapolated_{args.axis}{t:g}.csv"
        files[t] = write_runs(table, out / name)
    atomic_write_json(out / "step_laws.json", json_safe({
        "law": "L(x) = E + (x0/x)^alpha", "axis": args.axis, "targets": targets,
        "tables": {f"{t:g}": p.name for t, p in files.items()}, "max_step": args.max_step,
        "min_step": choice.min_step, "alpha": choice.alpha, "settings": choice.to_dict(),
        "params": params, "params_source": params_how, "notes": notes,
        "runs": {r: {m: law.to_dict() for m, law in per.items()} for r, per in result.laws.items()},
    }))
    rows = []
    for run_id, (_, curve) in runs.items():
        for m, law in result.laws[run_id].items():
            row = {"run": run_id, "metric": m, "E": law.E, "alpha": law.alpha,
                   "last observed": float(curve[m].dropna().iloc[-1])}
            row.update({f"at {t:g}": float(law.predict(t)) for t in targets})
            rows.append(row)
    settings = choice.summary("step law")
    report = Report(f"Step laws ({len(runs)} runs)", out)
    report.add_paragraph(f"L({args.axis}) = E + ({args.axis}0/{args.axis})^alpha, fitted on evals from step "
                         f"{choice.min_step} to {args.max_step or 'the end'}, extrapolated to {args.axis} "
                         f"{', '.join(f'{t:g}' for t in targets)}.")
    report.add_paragraph(settings + ".")
    if choice.scores:
        report.add_table(choice.scores)
    report.add_table(rows)
    for run_id, (_, curve) in list(runs.items())[:MAX_RUN_FIGURES]:
        fig = step_fit_figure(run_id, curve, result.laws[run_id], args.axis, (choice.min_step, args.max_step), targets)
        report.add_figure(fig, f"steps_{run_id}", f"{run_id}: {args.axis} curves with the fitted step laws")
    for n in notes:
        report.add_paragraph(f"note: {n}")
    report.write()
    print(_markdown_table(rows[:MAX_PRINTED_ROWS]))
    if len(rows) > MAX_PRINTED_ROWS:
        print(f"... {len(rows) - MAX_PRINTED_ROWS} more rows in {out / 'report.md'}")
    print(settings)
    print(f"non-embedding parameters: {params:,.0f} ({params_how})" if params is not None
          else f"non-embedding parameters: {params_how}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in files.values())} (runs tables: `regmix fit --runs` or "
          "`regmix scale predict --scale`)")
    return 0


def _markdown_table(rows: list[dict]) -> str:
    from regmix_plugin.markdown_table import markdown_table

    cols = list(rows[0])
    return markdown_table(cols, [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows])


def _scale_item(item: str) -> tuple[float, str, str]:
    """``--scale [PARAMS=]RUNS`` -> (count, how it was read, path)."""
    from regmix_plugin.scale.params import parse_params
    from regmix_plugin.table import read_runs

    if "=" in item:
        n_text, path = item.split("=", 1)
        n, how = parse_params(n_text, "--scale")
        return n, how, path
    table = read_runs(item)
    vals = table["params"].dropna().unique() if "params" in table.columns else []
    if len(vals) != 1:
        raise ConfigError(f"--scale: {item} has no single params value; write PARAMS={item} with the non-embedding "
                          "parameter count (e.g. 1.89e7) or a known model name (pythia-70m)")
    return float(vals[0]), "from the table's params column", item


def run_scale_predict(args: argparse.Namespace) -> int:
    from regmix_plugin.scale.laws import extrapolate_size
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.scale.params import parse_params
    from regmix_plugin.table import read_runs, write_runs

    tables, how = {}, {}
    for item in args.scale:
        n, h, path = _scale_item(item)
        if n in tables:
            raise ConfigError(f"--scale: size {n:g} given twice; give each model size once")
        tables[n], how[n] = read_runs(path), f"{h}, {path}"
    target, target_how = parse_params(args.target_params, "--target-params")
    for n in sorted(tables):
        print(f"size {n:,.0f} non-embedding parameters ({how[n]})")
    print(f"target {target:,.0f} non-embedding parameters ({target_how})")
    res = extrapolate_size(tables, target, alpha=args.alpha, metrics=args.metric, match_tol=args.match_tol)
    out = Path(args.out)
    laws_path = out.with_name(out.stem + "_size_laws.json")
    write_runs(res.table, out)
    doc = {"law": "L(N) = E + (N0/N)^alpha", "sizes": sorted(tables),
           "size_sources": {f"{n:g}": how[n] for n in sorted(tables)}, "target_params": target,
           "target_source": target_how, "match_tol": args.match_tol, "metrics": res.metrics,
           "settings": res.choice.to_dict(), "dropped": res.dropped,
           "runs": {r: {c: law.to_dict() for c, law in per.items()} for r, per in res.laws.items()}}
    # Written before scoring: the laws are kept even when --actual cannot be scored.
    atomic_write_json(laws_path, json_safe(doc))
    print(res.choice.summary("size law"))
    for d in res.dropped:
        print(f"note: {d}", file=sys.stderr)
    print(f"wrote {out}: predicted metrics of {len(res.table)} mixtures at {target:.4g} non-embedding parameters; "
          f"laws in {laws_path}")
    if args.actual:
        try:
            _score_actual(args, res, read_runs(args.actual), target, tables, doc, out, laws_path)
        except RegmixError as e:
            raise RegmixError(f"{e} (predictions and size laws are saved: {out}, {laws_path})") from None
    return 0


def _score_actual(args, res, actual, target, tables, doc, out: Path, laws_path: Path) -> None:
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.accuracy import score
    from regmix_plugin.scale.figures import predicted_vs_actual_figure

    acc = score(res.table, actual, res.metrics, match_tol=args.match_tol)
    print("| metric | MARE % | bias % | Spearman rho | pairs in order % |\n|---|---|---|---|---|")
    for r in acc.metrics:
        print(f"| {r['metric']} | {100 * r['mare']:.2f} | {100 * r['bias']:+.2f} | {r['spearman']:.3f} | "
              f"{100 * r['pairs_in_order']:.0f} |")
    o = acc.overall
    print(f"overall: MARE {100 * o['mare']:.2f}%, bias {100 * o['bias']:+.2f}%, max {100 * o['max_abs_rel_error']:.2f}% "
          f"over {o['n']} predictions of {o['mixtures']} mixtures; mixtures ranked by their mean over metrics: "
          f"{100 * o['pairs_in_order_mean']:.0f}% of pairs in order (Spearman {o['spearman_mean']:.3f})")
    mix_rows = acc.mixtures.to_dict(orient="records")
    print(_markdown_table(mix_rows[:MAX_PRINTED_ROWS]))
    for d in acc.dropped:
        print(f"note: --actual: {d}", file=sys.stderr)
    doc["actual"] = {"path": str(args.actual), **acc.to_dict()}
    atomic_write_json(laws_path, json_safe(doc))
    fig = predicted_vs_actual_figure(acc.pred, acc.actual, [r["metric"] for r in acc.metrics],
                                     f"size law: predicted vs actual at {target:.3g}", acc.mixtures)
    report = Report(f"Size law: predicted vs actual at {target:.4g} parameters", out.parent)
    report.add_paragraph(f"Sizes fitted: {', '.join(f'{n:.4g}' for n in sorted(tables))}; actual: {args.actual}. "
                         f"{res.choice.summary('size law')}.")
    report.add_paragraph(f"Overall: MARE {100 * o['mare']:.2f}%, bias {100 * o['bias']:+.2f}%; "
                         f"{100 * o['pairs_in_order_mean']:.0f}% of mixture pairs in the right order.")
    report.add_table(acc.metrics)
    report.add_table(mix_rows)
    report.add_figure(fig, out.stem + "_vs_actual", "predicted vs actual per mixture and metric; mixture ranks")
    for d in res.dropped + acc.dropped:
        report.add_paragraph(f"note: {d}")
    md, _ = report.write(out.stem + "_report.md", out.stem + "_report.html")
    print(f"wrote {md}")


def run_rank_check(args: argparse.Namespace) -> int:
    from regmix_plugin.scale.laws import rank_invariance
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.table import read_runs

    check = rank_invariance(read_runs(args.small), read_runs(args.large), args.threshold, args.metric,
                            match_tol=args.match_tol)
    print("| metric | Spearman rho | mixtures |\n|---|---|---|")
    for _, r in check.table.iterrows():
        print(f"| {r['metric']} | {r['rho']:.3f} | {r['n']} |")
    for d in check.dropped:
        print(f"note: {d}", file=sys.stderr)
    warning = check.warning()
    if warning:
        print(f"regmix: warning: {warning}", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, json_safe({"threshold": check.threshold, "low": check.low, "warning": warning,
                                             "dropped": list(check.dropped),
                                             "rows": check.table.to_dict(orient="records")}))
    return 0
