"""Figures of the scaling stage: matplotlib figures for the report builder
(`regmix_plugin.report.builder.Report.add_figure` saves them as PNG beside the markdown/HTML report)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from regmix_plugin.laws.saturating import PowerLaw
from regmix_plugin.report.builder import new_figure


def _label(metric: str) -> str:
    """``valid/wiki/loss`` -> ``wiki``; other metrics keep their name without the ``valid/`` prefix."""
    parts = metric.split("/")
    if len(parts) == 3 and parts[0] == "valid":
        return parts[1] if parts[2] == "loss" else f"{parts[1]}/{parts[2]}"
    return metric


def step_fit_figure(run_id: str, curve: pd.DataFrame, laws: Mapping[str, PowerLaw], axis: str,
                    fit_range: tuple[float, float | None], target: float):
    """Observed metrics against steps, the fitted step laws, and the extrapolation to the largest ``target``."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    lo, hi = fit_range
    targets = [target] if np.isscalar(target) else list(target)
    x = curve[axis].to_numpy(float)
    steps = curve["step"].to_numpy(float)
    xs = np.geomspace(max(x[x > 0].min(), 1.0), max(max(targets), x.max()), 200)
    for i, m in enumerate(laws):
        color = f"C{i % 10}"
        y = curve[m].to_numpy(float)
        used = (steps >= lo) & (steps <= (hi if hi is not None else np.inf))
        ax.plot(x[used], y[used], "o", ms=3, color=color, label=f"{_label(m)} (fitted points)")
        ax.plot(x[~used], y[~used], "x", ms=4, color=color, alpha=0.6)
        law = laws[m]
        ax.plot(xs, law.predict(xs), "-", color=color, lw=1,
                label=f"{_label(m)}: E={law.E:.3g}, alpha={law.alpha:.3g}")
    for t in targets:
        ax.axvline(t, color="k", ls=":", lw=1, label=f"target {axis} {t:g}")
    ax.set_xscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("validation loss")
    ax.set_title(f"{run_id}: step law L = E + ({axis}0/{axis})^alpha  (x: points not fitted)")
    ax.legend(fontsize=7)
    return fig


def predicted_vs_actual_figure(pred: pd.DataFrame, actual: pd.DataFrame, columns: list[str],
                               title: str, ranks: pd.DataFrame | None = None):
    """Predicted against measured value per mixture (rows already matched), one colour per metric; with
    ``ranks`` (columns predicted_rank, actual_rank) a second panel compares the mixtures' rankings."""
    fig = new_figure(9.6 if ranks is not None else 5.0, 4.8)
    ax = fig.add_subplot(1, 2 if ranks is not None else 1, 1)
    lo, hi = np.inf, -np.inf
    for i, c in enumerate(columns):
        p, a = pred[c].to_numpy(float), actual[c].to_numpy(float)
        ax.plot(a, p, "o", ms=4, color=f"C{i % 10}", label=_label(c))
        lo, hi = min(lo, np.nanmin(p), np.nanmin(a)), max(hi, np.nanmax(p), np.nanmax(a))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    if ranks is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot(ranks["actual_rank"], ranks["predicted_rank"], "o", ms=5, color="C0")
        n = len(ranks)
        ax2.plot([1, n], [1, n], "k--", lw=1)
        ax2.set_xlabel("actual rank (1 = lowest mean)")
        ax2.set_ylabel("predicted rank")
        ax2.set_title("mixtures ranked by the mean over metrics", fontsize=9)
    return fig
