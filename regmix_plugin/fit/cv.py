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
# A fold whose MSE exceeds this many times the target's variance is a divergent fit (the mixing law's 1e30 on
# one fold of 32 DCLM runs), not a score: predicting the mean everywhere scores 1x.
DIVERGED_MSE = 1e6


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


def repeated_folds(n: int, n_splits: int, random_state: int, repeats: int) -> list[list[np.ndarray]]:
    """``repeats`` K-fold partitions, seeds ``random_state``, ``random_state + 1``, ...: the first is the
    partition of a single K-fold CV with ``random_state`` (what the stack and log-law use inside)."""
    return [kfold_indices(n, n_splits, random_state + r) for r in range(repeats)]


def divergence(y: np.ndarray, oof: np.ndarray, folds: list[np.ndarray]) -> str:
    """Why these out-of-fold predictions are a divergent fit ('' when they are not): a fold with a non-finite
    prediction, or an MSE above ``DIVERGED_MSE`` times the target's variance."""
    var = max(float(np.var(y)), 1e-300)
    for i, f in enumerate(folds):
        if not np.all(np.isfinite(oof[f])):
            return f"fold {i + 1}: non-finite predictions"
        mse = float(np.mean((y[f] - oof[f]) ** 2))
        if mse > DIVERGED_MSE * var:
            return f"fold {i + 1}: MSE {mse:.2g}, over {DIVERGED_MSE:.0e} x the target's variance"
    return ""


def fold_scores(y: np.ndarray, oof: np.ndarray, folds: list[np.ndarray], metric: str) -> np.ndarray:
    """``metric`` on each fold's held-out rows (NaN on a fold of fewer than 3 runs)."""
    return np.array([scores(y[f], oof[f])[metric] if len(f) >= 3 else np.nan for f in folds])


def corrected_se(values: np.ndarray, n_splits: int) -> float:
    """Standard error of the mean of per-fold values (R x K of them, from R repeats of K-fold CV).

    The folds share training runs, so they are not independent and std/sqrt(R K) would be far too small:
    Nadeau & Bengio's correction (Machine Learning 52, 2003) uses var * (1/(R K) + n_test/n_train), with
    n_test/n_train = 1/(K - 1). More repeats shrink only the first term: they remove the noise of one
    partition, not the noise of having these runs."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    return float(np.sqrt((1.0 / len(v) + 1.0 / max(n_splits - 1, 1)) * np.var(v, ddof=1)))


def out_of_fold(make: Callable[[], Predictor], X: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Predictions for every run from a model that did not see it."""
    oof = np.empty(len(y))
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        oof[test] = make().fit(X[train], y[train]).predict(X[test])
    return oof


@dataclass
class CVResult:
    """A candidate's CV: ``scores`` (the mean over repeats of each metric on the pooled out-of-fold
    predictions; None when it was not scored), ``oof`` (the first repeat's out-of-fold predictions), and for
    `auto`, ``fold_scores`` (repeats x folds, the selection metric per fold), ``se`` (its corrected standard
    error) and ``note`` (why a candidate was skipped or flagged; such a candidate is never chosen)."""

    name: str
    scores: dict[str, float | None]
    oof: np.ndarray | None
    fold_scores: np.ndarray | None = None
    se: float | None = None
    note: str = ""
    per_partition: list[float] | None = None  # the selection metric on each partition's pooled predictions

    @property
    def ok(self) -> bool:
        return not self.note

    def row(self) -> dict[str, float | str | None]:
        row = {"predictor": self.name, **{k: None if v is None else round(v, 4) for k, v in self.scores.items()}}
        if self.fold_scores is not None or self.note:
            row["se"] = None if self.se is None else round(self.se, 4)
            row["note"] = self.note
        return row


def format_table(rows: list[dict]) -> str:
    """A markdown table of CV rows (predictor, spearman, pearson, mse, top10_overlap; `auto`'s rows add the
    standard error of the selection metric, "± se", and a note on skipped or divergent candidates)."""
    from regmix_plugin.markdown_table import markdown_table

    head = ["predictor", "spearman", "pearson", "mse", "top10_overlap"]
    head += [h for h in ("se", "note") if any(h in r for r in rows)]

    def cell(r: dict, h: str) -> str:
        v = r.get(h)
        if h in ("predictor", "note"):
            return str(v or "")
        return "-" if v is None else f"{v:.5f}" if h == "mse" else f"{v:.2f}"

    return markdown_table([("± se" if h == "se" else h) for h in head], [[cell(r, h) for h in head] for r in rows])
