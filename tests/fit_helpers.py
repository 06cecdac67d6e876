"""Tiny synthetic runs with a known structure, and fast hyperparameters for every predictor."""

from __future__ import annotations

import numpy as np
import pandas as pd

DOMAINS = ("web", "code", "books", "math")
TRUE_T = np.array([-2.0, -0.5, 0.5, 0.0])

# Few trees and starts so the whole fit test file stays within its time budget on 2 cores.
FAST_PARAMS = {
    "linear": {},
    "lightgbm": {"n_estimators": 30, "learning_rate": 0.1},
    "mixing-law": {"n_starts": 2},
    "log-law": {"n_starts": 2},
    "law-blend": {"eps_grid": [0.01, 0.1], "n_starts": 2, "n_splits": 3},
    "gp": {"n_restarts": 0},
    "stack": {"members": ["linear", "mixing-law"], "n_splits": 3},
    "per-column": {"base_params": {"n_starts": 2}},
    "joint-law": {"eps_inits": [0.03], "n_starts": 2},
    "eff-law": {"n_starts": 2},
    "phase-law": {"n_starts": 2},
    "averaged-exposure": {"base_params": {"n_starts": 2}},
    "auto": {"candidates": ["linear", "mixing-law"], "n_splits": 3},
}


def synthetic_xy(n: int = 40, seed: int = 0, noise: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Mixtures from a Dirichlet and a target following the mixing law 2 + exp(t . r) plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(len(DOMAINS), 0.7), n)
    y = 2.0 + np.exp(X @ TRUE_T) + noise * rng.normal(size=n)
    return X, y


def synthetic_runs(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A runs table as `regmix collect` writes it: weights, two per-domain losses, one failed run."""
    X, y = synthetic_xy(n, seed)
    df = pd.DataFrame({"run_id": [f"r{i:03d}" for i in range(n)], "status": "completed"})
    for j, d in enumerate(DOMAINS):
        df[f"weight/{d}"] = X[:, j]
    df["valid/web/loss"] = y
    df["valid/code/loss"] = 3.0 + np.exp(X @ np.array([0.3, -1.5, 0.2, 0.1]))
    df.loc[n - 1, "status"] = "failed"
    df.loc[n - 1, "valid/web/loss"] = np.nan
    return df
