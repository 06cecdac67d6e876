"""``regmix scale fit|predict|rank-check``: a thin CLI over `regmix_plugin.scale.laws`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.io import json_safe
from regmix_plugin.scale import MATCH_TOL


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


def run_scale_fit(args: argparse.Namespace) -> int:
    from regmix_plugin.scale import reports
    from regmix_plugin.scale.laws import StepFitConfig, extrapolate_steps
    from regmix_plugin.scale.params import params_of_runs
    from regmix_plugin.collect.runs_table import load_records
    from regmix_plugin.collect.curves import curves_to_fit
    from regmix_plugin.table import write_runs

    targets = _targets(args.target)
    cfg = StepFitConfig(axis=args.axis, min_step=args.min_step, max_step=args.max_step, alpha=args.alpha,
                        metrics=tuple(args.metric) if args.metric else None)
    if not args.run_dirs and not args.curves:
        raise ConfigError("RUN_DIR: give run directories or --curves files")
    notes: list[str] = []
    runs, used = curves_to_fit(load_records(args.run_dirs, args.curves, args.mixtures, notes), notes)
    if not runs:
        raise ConfigError(f"RUN_DIR: no run with evaluations among {', '.join(args.run_dirs + args.curves)}")
    params, params_how = params_of_runs([rec.path for rec in used], args.params)
    result = extrapolate_steps(runs, targets, cfg)
    out = Path(args.out)
    files = {}
    for t, table in result.tables.items():
        if params is not None:
            table["params"] = params
        name = "extrapolated.csv" if len(targets) == 1 else f"extrapolated_{args.axis}{t:g}.csv"
        files[t] = write_runs(table, out / name)
    reports.write_step_laws(out / "step_laws.json", result, args.axis, targets, files, args.max_step, params,
                            params_how, notes)
    rows = reports.step_law_rows(runs, result, targets)
    md = reports.write_step_report(out, runs, result, rows, args.axis, targets, args.max_step, notes)
    print(reports.printed_table(rows, more_in=md))
    print(result.choice.summary("step law"))
    print(f"non-embedding parameters: {params:,.0f} ({params_how})" if params is not None
          else f"non-embedding parameters: {params_how}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in files.values())} (runs tables: `regmix fit --runs` or "
          "`regmix scale predict --scale`)")
    return 0


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
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.scale.laws import extrapolate_size
    from regmix_plugin.scale.params import parse_params
    from regmix_plugin.scale.reports import size_laws_doc
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
    doc = size_laws_doc(res, tables, how, target, target_how, args.match_tol)
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
    from regmix_plugin.scale import reports
    from regmix_plugin.scale.accuracy import score

    acc = score(res.table, actual, res.metrics, match_tol=args.match_tol)
    print(reports.accuracy_summary(acc))
    print(reports.printed_table(acc.mixtures.to_dict(orient="records")))
    for d in acc.dropped:
        print(f"note: --actual: {d}", file=sys.stderr)
    doc["actual"] = {"path": str(args.actual), **acc.to_dict()}
    atomic_write_json(laws_path, json_safe(doc))
    md = reports.write_accuracy_report(out, res, acc, target, list(tables), args.actual)
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
