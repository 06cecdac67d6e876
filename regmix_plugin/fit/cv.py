"""K-fold cross-validation on the training runs only, and the scores the CV table prints.

Nothing here ever sees a held-out test set: `auto` and the stack choose among predictors by these
out-of-fold scores, which is the honest stand-in for "rho on unseen mixtures". `auto` computes its
candidates' out-of-fold predictions through fit/oof.py, which fits each shared model once per fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr

from regmix_plugin.fit.base import FitError, Predictor

METRICS = ("spearman", "pearson", "mse", "top10_overlap")


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Spearman/Pearson (x100), MSE, and the share of the truly best 10% (lowest) found in the predicted best 10%."""
    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    n = len(y_true)
    k = max(1, int(round(0.1 * n)))
    top_true = set(np.argsort(y_true, kind="stable")[:k])
    top_pred = set(np.argsort(y_pred, kind="stable")[:k])
    const = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0
    return {
        "spearman": 0.0 if const else float(100 * spearmanr(y_true, y_pred)[0]),
        "pearson": 0.0 if const else float(100 * pearsonr(y_true, y_pred)[0]),
        "mse": float(np.mean((y_true - y_pred) ** 2)),
        "top10_overlap": float(100 * len(top_true & top_pred) / k),
    }


def top10_overlap(y_true: np.ndarray, y_pred: np.ndarray, maximize: bool = False) -> float:
    """Share (x100) of the truly best 10% of runs found in the predicted best 10%: the lowest, or the highest
    for a target to maximise (``scores`` reports the lowest; fit_model recomputes it for such targets)."""
    s = -1.0 if maximize else 1.0
    k = max(1, int(round(0.1 * len(y_true))))
    top_true = set(np.argsort(s * np.asarray(y_true, float), kind="stable")[:k])
    top_pred = set(np.argsort(s * np.asarray(y_pred, float), kind="stable")[:k])
    return float(100 * len(top_true & top_pred) / k)


def kfold_indices(n: int, n_splits: int, random_state: int) -> list[np.ndarray]:
    if n_splits < 2:
        raise FitError(f"cv.n_splits: {n_splits} must be >= 2")
    if n < n_splits:
        raise FitError(f"cv: {n} runs cannot be split into {n_splits} folds; give more runs or fewer folds (--folds)")
    perm = np.random.default_rng(random_state).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, n_splits)]


def out_of_fold(make: Callable[[], Predictor], X: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Predictions for every run from a model that did not see it."""
    oof = np.empty(len(y))
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        oof[test] = make().fit(X[train], y[train]).predict(X[test])
    return oof


@dataclass
class CVResult:
    name: str
    scores: dict[str, float]
    oof: np.ndarray

    def row(self) -> dict[str, float | str]:
        return {"predictor": self.name, **{k: round(v, 4) for k, v in self.scores.items()}}


def format_table(rows: list[dict]) -> str:
    """A markdown table of CV rows (predictor, spearman, pearson, mse, top10_overlap)."""
    from regmix_plugin.markdown_table import markdown_table

    head = ["predictor", "spearman", "pearson", "mse", "top10_overlap"]
    return markdown_table(head, [[str(r["predictor"])] + (
        [f"skipped: {r['skipped']}", "-", "-", "-"] if "skipped" in r
        else [f"{r[h]:.2f}" if h != "mse" else f"{r[h]:.5f}" for h in head[1:]]) for r in rows])
