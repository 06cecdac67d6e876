"""Figures of the continual-training stage, for the report builder (`regmix_plugin.report.builder`)."""

from __future__ import annotations

import numpy as np

from regmix_plugin.continual.replay import ContinualResult
from regmix_plugin.report.builder import new_figure


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
