"""The fit/optimise report: CV table, predicted vs actual, weights vs prior, interaction heatmap, constraints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from regmix_plugin.optimize.uncertainty import interval_text
from regmix_plugin.report.builder import Report, new_figure


def predicted_vs_actual(y: np.ndarray, oof: dict[str, np.ndarray], target: str, better: str = "lower is better"):
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot(111)
    for name, p in oof.items():
        ax.scatter(y, p, s=8, alpha=0.6, label=name)
    lo, hi = float(np.min(y)), float(np.max(y))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"actual {target} ({better})")
    ax.set_ylabel("predicted (held-out fold)")
    ax.legend(fontsize=7)
    return fig


def weights_vs_prior(names: list[str], weights: np.ndarray, prior: np.ndarray):
    fig = new_figure(max(6.0, 0.35 * len(names)), 4.0)
    ax = fig.add_subplot(111)
    x = np.arange(len(names))
    ax.bar(x - 0.2, prior, 0.4, label="prior")
    ax.bar(x + 0.2, weights, 0.4, label="chosen")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("weight")
    ax.legend()
    return fig


def interaction_heatmap(inter: dict):
    coef = np.asarray(inter["coef"], float)
    rows = [r.removeprefix("valid/").removesuffix("/loss") for r in inter["rows"]]
    cols = inter["domains"]
    fig = new_figure(max(6.0, 0.4 * len(cols)), max(4.0, 0.35 * len(rows)))
    ax = fig.add_subplot(111)
    lim = float(np.max(np.abs(coef))) or 1.0
    im = ax.imshow(coef, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("training domain weight")
    ax.set_ylabel("validation loss")
    fig.colorbar(im, ax=ax, label="centred coefficient (blue: lowers loss)")
    return fig


def write_fit_report(model, outcome, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Markdown + HTML report of a fitted model and (optionally) an optimisation outcome."""
    t = model.target
    rep = Report(f"Mixture fit: {t.direction} {t.expr} ({t.better})", out_dir)
    # The direction first, in bold: a target optimised the wrong way must be impossible to miss.
    rep.add_paragraph(f"**Direction: {t.direction.upper()} {t.expr} ({t.better}).** Why: {t.direction_source}. "
                      f"The best proxy run is the one with the {'highest' if t.maximize else 'lowest'} target, and "
                      f"the search looks for the {'highest' if t.maximize else 'lowest'} prediction.")
    rep.add_paragraph(f"{model.n_runs} proxy runs; predictor **{model.chosen}**: {model.reason}.")
    sel = model.selection or {}
    if "best_by_cv" in sel:
        rep.add_paragraph(f"Selection rule: {sel['rule']}; best CV score: {sel['best_by_cv']}"
                          + (f"; the more constrained {sel['constrained']} trails it by {sel['gap']:.2f}, within one "
                             f"standard error ({sel['standard_error']:.2f}), and was chosen" if "constrained" in sel else "")
                          # models saved before issue 27 recorded the smooth-law rule (DECISIONS 35)
                          + (f"; best smooth law {sel['smooth_law']} trails it by {sel['gap']:.2f} (one standard error "
                             f"{sel['standard_error']:.2f})" if "smooth_law" in sel else "") + ".")
    if model.dropped:
        rep.add_paragraph(f"Left out {len(model.dropped)} failed/incomplete run(s): {', '.join(model.dropped[:20])}.")
    rep.add_heading("Cross-validation")
    cols = ["predictor", "spearman", "pearson", "mse", "top10_overlap"] + [c for c in ("se", "note") if any(c in r for r in model.cv)]
    # A skipped or divergent candidate has no scores (None): "-" and its note, never a number (DECISIONS 68, 78).
    rep.add_table([{c: "-" if r.get(c) is None else r[c] for c in cols} for r in model.cv], cols)
    if model.heldout:
        rep.add_paragraph(model.heldout_text()[0].upper() + model.heldout_text()[1:] + ".")
    if model.learning_curve.get("points"):
        rep.add_heading("How many runs?", level=3)
        lc = model.learning_curve
        rep.add_table([{"runs": p["runs"], "share of the runs": f"{100 * p['fraction']:.0f} %",
                        f"{lc['folds']}-fold CV spearman": p["spearman"]} for p in lc["points"]]
                      + ([{"runs": lc["projected_runs"], "share of the runs": "projected",
                           f"{lc['folds']}-fold CV spearman": lc["projected_spearman"]}]
                         if lc.get("projected_spearman") is not None else []), floatfmt="{:.2f}")
        rep.add_paragraph(f"CV of {model.chosen} on random subsets of the training runs, and a power law in what "
                          "is left to gain, projected to twice the runs (docs/predictors.md, \"How many runs?\"; "
                          "its accuracy is measured in BENCHMARKS.md).")
    if model.oof:
        rep.add_figure(predicted_vs_actual(model.y, model.oof, model.target.expr, t.better), "predicted_vs_actual",
                       "Out-of-fold predictions vs actual target on the proxy runs")
    if model.interactions.get("rows"):
        rep.add_heading("Domain interactions")
        rep.add_figure(interaction_heatmap(model.interactions), "interactions",
                       "Linear-law coefficients: per-domain validation loss vs training-domain weight")
    if outcome is not None:
        prov = outcome.mixture.provenance
        rep.add_heading("Chosen mixture")
        unc = prov["predicted_target_uncertainty"]
        rep.add_paragraph(
            f"Predicted target ({t.better}) {outcome.result.predicted:.4f} {interval_text(unc)}; "
            f"{outcome.result.label} search in {outcome.seconds:.2f}s."
        )
        if unc.get("interval"):
            rep.add_paragraph(
                f"Interval: {unc['interval']['method']} of {unc['interval']['calibration_runs']} proxy runs. It covers a "
                "new mixture drawn like the proxy runs at the stated rate; at the optimum (the predictor's own "
                "optimum) treat it as the error scale, not a guarantee (docs/uncertainty.md).")
        rows = [{"mixture": k, **{c: v[c] for c in ("predicted", "actual") if c in v},
                 "interval": "-" if not v.get("interval") or v["interval"][0] is None
                 else f"{v['interval'][0]:.4f} to {v['interval'][1]:.4f}"} for k, v in outcome.baselines.items()]
        rep.add_table(rows, ["mixture", "predicted", "interval", "actual"])
        rep.add_figure(weights_vs_prior(model.domains, outcome.result.weights, outcome.prior), "weights_vs_prior",
                       "Chosen weights vs the prior")
        rep.add_table([{"domain": d, "weight": float(w), "prior": float(p), "min": float(l), "max": float(h)}
                       for d, w, p, l, h in zip(model.domains, outcome.result.weights, outcome.prior, outcome.lo, outcome.hi)])
        rep.add_heading("Active constraints")
        active = outcome.result.active
        rep.add_paragraph(", ".join(f"{d}: {why}" for d, why in active.items()) if active else "No constraint is active.")
        if "prefixes_note" in prov:
            rep.add_paragraph("Note: " + prov["prefixes_note"])
    return rep.write()
