"""Figures of the scaling and continual-training stages: matplotlib figures for the report builder
(`regmix_plugin.report.builder.Report.add_figure` saves them as PNG beside the markdown/HTML report)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from regmix_plugin.fit.scaling import PowerLaw, curve_domains
from regmix_plugin.optimize.continual import ContinualResult
from regmix_plugin.report.builder import new_figure
from regmix_plugin.table import loss_column


def step_fit_figure(run_id: str, curve: pd.DataFrame, laws: Mapping[str, PowerLaw], axis: str,
                    fit_range: tuple[float, float | None], target: float):
    """Observed per-domain losses against steps, the fitted step law, and the extrapolation to ``target``."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    lo, hi = fit_range
    x = curve[axis].to_numpy(float)
    xs = np.geomspace(max(x[x > 0].min(), 1.0), max(target, x.max()), 200)
    for i, d in enumerate(curve_domains(curve)):
        color = f"C{i % 10}"
        y = curve[loss_column(d)].to_numpy(float)
        used = (x >= lo) & (x <= (hi if hi is not None else np.inf))
        ax.plot(x[used], y[used], "o", ms=3, color=color, label=f"{d} (fitted points)")
        ax.plot(x[~used], y[~used], "x", ms=4, color=color, alpha=0.6)
        if d in laws:
            law = laws[d]
            ax.plot(xs, law.predict(xs), "-", color=color, lw=1,
                    label=f"{d}: E={law.E:.3g}, alpha={law.alpha:.3g}")
    ax.axvline(target, color="k", ls=":", lw=1, label=f"target {axis} {target:g}")
    ax.set_xscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("validation loss")
    ax.set_title(f"{run_id}: step law L = E + ({axis}0/{axis})^alpha  (x: points not fitted)")
    ax.legend(fontsize=7)
    return fig


def predicted_vs_actual_figure(pred: pd.DataFrame, actual: pd.DataFrame, columns: list[str],
                               title: str):
    """Predicted against measured loss per mixture (rows already matched), one colour per domain."""
    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    lo, hi = np.inf, -np.inf
    for i, c in enumerate(columns):
        p, a = pred[c].to_numpy(float), actual[c].to_numpy(float)
        ax.plot(a, p, "o", ms=4, color=f"C{i % 10}", label=c.split("/")[1])
        lo, hi = min(lo, np.nanmin(p), np.nanmin(a)), max(hi, np.nanmax(p), np.nanmax(a))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("actual loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def continual_figure(result: ContinualResult):
    """Old- and new-domain loss against the replay proportion, the fitted laws and the critical proportion."""
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, 201)
    pts = result.points
    ax.plot(pts["proportion"], pts["old_loss"], "o", color="C0", label="old-domain loss (runs)")
    ax.plot(grid, result.old_law.predict(grid), "-", color="C0", lw=1, label="old-domain law")
    ax.plot(pts["proportion"], pts["new_loss"], "s", color="C1", label="new-domain loss (runs)")
    ax.plot(grid, result.new_law.predict(grid), "-", color="C1", lw=1, label="new-domain law")
    ax.axhline(result.base_old_loss, color="C0", ls=":", lw=1, label="base checkpoint, old domains")
    if result.tolerance:
        ax.axhline(result.target, color="C0", ls="--", lw=0.8, label=f"tolerance +{result.tolerance:g}")
    if result.critical_proportion is not None:
        ax.axvline(result.critical_proportion, color="k", ls="--", lw=1,
                   label=f"critical p* = {result.critical_proportion:.3f}")
    ax.set_xlabel("replay proportion p (share of original data)")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=7)
    return fig
