"""What the scaling commands write besides their tables: the step-law and size-law reports, their laws files,
and the short tables they print. The commands in ``scale/commands.py`` only parse, call these and print."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from regmix_plugin.io import atomic_write_json, json_safe
from regmix_plugin.markdown_table import markdown_table

# Figures for at most this many runs: a sweep of hundreds would otherwise write hundreds of PNGs.
MAX_RUN_FIGURES = 12
# Rows of a results table printed to the terminal; the report has all of them.
MAX_PRINTED_ROWS = 24


def printed_table(rows: list[dict], more_in: Path | None = None) -> str:
    """The first :data:`MAX_PRINTED_ROWS` rows as a markdown table, numbers to 4 significant digits."""
    cols = list(rows[0])
    shown = rows[:MAX_PRINTED_ROWS]
    text = markdown_table(cols, [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in shown])
    if len(rows) > MAX_PRINTED_ROWS and more_in is not None:
        text += f"\n... {len(rows) - MAX_PRINTED_ROWS} more rows in {more_in}"
    return text


def step_law_rows(runs: Mapping[str, tuple[Any, pd.DataFrame]], result, targets: Sequence[float]) -> list[dict]:
    """One row per (run, metric): the law, the last observed value and the value at each target."""
    rows = []
    for run_id, (_, curve) in runs.items():
        for m, law in result.laws[run_id].items():
            row = {"run": run_id, "metric": m, "E": law.E, "alpha": law.alpha,
                   "last observed": float(curve[m].dropna().iloc[-1])}
            row.update({f"at {t:g}": float(law.predict(t)) for t in targets})
            rows.append(row)
    return rows


def write_step_laws(path: Path, result, axis: str, targets: Sequence[float], tables: Mapping[float, Path],
                    max_step: float | None, params: float | None, params_source: str, notes: list[str]) -> Path:
    """``step_laws.json``: the settings used and how they were chosen, and every run's laws."""
    choice = result.choice
    return atomic_write_json(path, json_safe({
        "law": "L(x) = E + (x0/x)^alpha", "axis": axis, "targets": list(targets),
        "tables": {f"{t:g}": p.name for t, p in tables.items()}, "max_step": max_step,
        "min_step": choice.min_step, "alpha": choice.alpha, "settings": choice.to_dict(),
        "params": params, "params_source": params_source, "notes": notes,
        "runs": {r: {m: law.to_dict() for m, law in per.items()} for r, per in result.laws.items()},
    }))


def write_step_report(out: Path, runs: Mapping[str, tuple[Any, pd.DataFrame]], result, rows: list[dict], axis: str,
                      targets: Sequence[float], max_step: float | None, notes: list[str]) -> Path:
    """report.md/.html with the chosen settings, the laws and a figure per run (the first few runs)."""
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.figures import step_fit_figure

    choice = result.choice
    report = Report(f"Step laws ({len(runs)} runs)", out)
    report.add_paragraph(f"L({axis}) = E + ({axis}0/{axis})^alpha, fitted on evals from step "
                         f"{choice.min_step} to {max_step or 'the end'}, extrapolated to {axis} "
                         f"{', '.join(f'{t:g}' for t in targets)}.")
    report.add_paragraph(choice.summary("step law") + ".")
    if choice.scores:
        report.add_table(choice.scores)
    report.add_table(rows)
    for run_id, (_, curve) in list(runs.items())[:MAX_RUN_FIGURES]:
        fig = step_fit_figure(run_id, curve, result.laws[run_id], axis, (choice.min_step, max_step), targets)
        report.add_figure(fig, f"steps_{run_id}", f"{run_id}: {axis} curves with the fitted step laws")
    for n in notes:
        report.add_paragraph(f"note: {n}")
    md, _ = report.write()
    return md


def size_laws_doc(res, tables: Mapping[float, Any], sources: Mapping[float, str], target: float, target_source: str,
                  match_tol: float) -> dict:
    """The content of ``<out>_size_laws.json`` (``actual`` is added when a measurement is scored)."""
    return {"law": "L(N) = E + (N0/N)^alpha", "sizes": sorted(tables),
            "size_sources": {f"{n:g}": sources[n] for n in sorted(tables)}, "target_params": target,
            "target_source": target_source, "match_tol": match_tol, "metrics": res.metrics,
            "settings": res.choice.to_dict(), "dropped": res.dropped,
            "runs": {r: {c: law.to_dict() for c, law in per.items()} for r, per in res.laws.items()}}


def accuracy_summary(acc) -> str:
    """The terminal summary of a scored prediction: per metric, then overall."""
    lines = ["| metric | MARE % | bias % | Spearman rho | pairs in order % |", "|---|---|---|---|---|"]
    for r in acc.metrics:
        lines.append(f"| {r['metric']} | {100 * r['mare']:.2f} | {100 * r['bias']:+.2f} | {r['spearman']:.3f} | "
                     f"{100 * r['pairs_in_order']:.0f} |")
    o = acc.overall
    lines.append(f"overall: MARE {100 * o['mare']:.2f}%, bias {100 * o['bias']:+.2f}%, max "
                 f"{100 * o['max_abs_rel_error']:.2f}% over {o['n']} predictions of {o['mixtures']} mixtures; mixtures "
                 f"ranked by their mean over metrics: {100 * o['pairs_in_order_mean']:.0f}% of pairs in order "
                 f"(Spearman {o['spearman_mean']:.3f})")
    return "\n".join(lines)


def write_accuracy_report(out: Path, res, acc, target: float, sizes: Sequence[float], actual_path: str) -> Path:
    """``<out>_report.md/.html``: the size law's predictions against the measured runs, with a figure."""
    from regmix_plugin.report.builder import Report
    from regmix_plugin.scale.figures import predicted_vs_actual_figure

    o = acc.overall
    fig = predicted_vs_actual_figure(acc.pred, acc.actual, [r["metric"] for r in acc.metrics],
                                     f"size law: predicted vs actual at {target:.3g}", acc.mixtures)
    report = Report(f"Size law: predicted vs actual at {target:.4g} parameters", out.parent)
    report.add_paragraph(f"Sizes fitted: {', '.join(f'{n:.4g}' for n in sorted(sizes))}; actual: {actual_path}. "
                         f"{res.choice.summary('size law')}.")
    report.add_paragraph(f"Overall: MARE {100 * o['mare']:.2f}%, bias {100 * o['bias']:+.2f}%; "
                         f"{100 * o['pairs_in_order_mean']:.0f}% of mixture pairs in the right order.")
    report.add_table(acc.metrics)
    report.add_table(acc.mixtures.to_dict(orient="records"))
    report.add_figure(fig, out.stem + "_vs_actual", "predicted vs actual per mixture and metric; mixture ranks")
    for d in res.dropped + acc.dropped:
        report.add_paragraph(f"note: {d}")
    md, _ = report.write(out.stem + "_report.md", out.stem + "_report.html")
    return md
