"""How good a prediction of runs tables is against measured ones: what ``regmix scale predict --actual`` and
the nested benchmark report.

Per metric: mean absolute relative error (MARE), bias (mean signed relative error: > 0 means the laws
predict too high a loss), Spearman rho across mixtures, and the share of mixture pairs in the right
order. Per mixture: its mean over the metrics, predicted and measured, and its rank by each; the pairs
share of those means is the question a data mixture is chosen by (is mixture A better than B?).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from regmix_plugin.scale.match import MATCH_TOL, match_tables


def pair_order_share(pred: np.ndarray, actual: np.ndarray) -> float:
    """Share of pairs (i, j) with different measured values whose predicted values are in the same order."""
    pred, actual = np.asarray(pred, float), np.asarray(actual, float)
    ok = np.isfinite(pred) & np.isfinite(actual)
    pred, actual = pred[ok], actual[ok]
    i, j = np.triu_indices(len(actual), k=1)
    da, dp = np.sign(actual[i] - actual[j]), np.sign(pred[i] - pred[j])
    counted = da != 0
    return float(np.mean(da[counted] == dp[counted])) if counted.any() else math.nan


def _rho(p: np.ndarray, a: np.ndarray) -> float:
    if len(p) < 3:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column gives nan rho, reported as such
        return float(spearmanr(p, a).statistic)


@dataclass
class Accuracy:
    """``metrics``: one row per metric; ``overall``: pooled over every (mixture, metric); ``mixtures``: one row
    per mixture; ``dropped``: rows the mixture matching left out; ``pred``/``actual``: the matched tables."""

    metrics: list[dict[str, Any]]
    overall: dict[str, Any]
    mixtures: pd.DataFrame
    dropped: list[str] = field(default_factory=list)
    pred: pd.DataFrame | None = None
    actual: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "metrics": self.metrics,
                "mixtures": self.mixtures.to_dict(orient="records"), "dropped": self.dropped}


def score(pred: pd.DataFrame, actual: pd.DataFrame, metrics: list[str], names=("prediction", "--actual"),
          match_tol: float = MATCH_TOL) -> Accuracy:
    """Score ``pred`` against ``actual`` on ``metrics`` (mixtures matched by weights; those in both only)."""
    match = match_tables([pred, actual], list(names), match_tol)
    p, a = match.tables
    cols = [c for c in metrics if c in a.columns]
    if not cols:
        from regmix_plugin.errors import RegmixError

        raise RegmixError(f"{names[1]}: none of the predicted metrics ({', '.join(metrics)}) is a column; "
                          "give a runs table measured on the same evaluation sets")
    rows, rel_all = [], []
    for c in cols:
        pv, av = p[c].to_numpy(float), a[c].to_numpy(float)
        ok = np.isfinite(pv) & np.isfinite(av) & (av != 0)
        rel = (pv[ok] - av[ok]) / av[ok]
        rel_all.append(rel)
        rows.append({"metric": c, "n": int(ok.sum()), "mare": float(np.mean(np.abs(rel))) if ok.any() else math.nan,
                     "bias": float(np.mean(rel)) if ok.any() else math.nan, "spearman": _rho(pv[ok], av[ok]),
                     "pairs_in_order": pair_order_share(pv[ok], av[ok])})
    rel = np.concatenate(rel_all) if rel_all else np.array([])
    pm, am = p[cols].mean(axis=1).to_numpy(float), a[cols].mean(axis=1).to_numpy(float)
    mix = pd.DataFrame({"run_id": p["run_id"].astype(str), "predicted_mean": pm, "actual_mean": am,
                        "rel_error": (pm - am) / am})
    mix["predicted_rank"] = mix["predicted_mean"].rank(method="min").astype(int)
    mix["actual_rank"] = mix["actual_mean"].rank(method="min").astype(int)
    mix = mix.sort_values("actual_rank", kind="stable").reset_index(drop=True)
    overall = {"n": int(rel.size), "mare": float(np.mean(np.abs(rel))) if rel.size else math.nan,
               "bias": float(np.mean(rel)) if rel.size else math.nan,
               "max_abs_rel_error": float(np.max(np.abs(rel))) if rel.size else math.nan,
               "mixtures": int(len(p)),
               "pairs_in_order_per_metric": float(np.nanmean([r["pairs_in_order"] for r in rows])),
               "pairs_in_order_mean": pair_order_share(pm, am), "spearman_mean": _rho(pm, am)}
    return Accuracy(rows, overall, mix, match.dropped, p, a)
