"""Which rows of several runs tables are the same mixture: weights equal within a tolerance after
normalisation, with a reason for every row left out.

Runs of one mixture at different scales (or a prediction and its measurement) seldom record identical
weights: one file says 0.01562 where another says 0.015625. Exact matching dropped such rows without a
word; here two rows match when every normalised weight differs by at most ``tol`` (default 1e-4), and
each row that does not match is named with the nearest candidate and how far it is.

Domains whose weight is 0 in every row of a table are not training domains of it (a run that lists an
evaluation set as a weight-0 domain); they are left out before comparing tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from regmix_plugin.errors import RegmixError
from regmix_plugin.scale import MATCH_TOL
from regmix_plugin.table import domains as table_domains
from regmix_plugin.table import weight_column

NEAR_MISS = 1e-2  # a nearest mixture closer than this is named as a near miss


@dataclass
class MatchResult:
    """``tables``: each table's rows for the mixtures all tables share, in one order (the first table's);
    ``dropped``: one line per row left out, saying why."""

    tables: list[pd.DataFrame]
    dropped: list[str] = field(default_factory=list)


def training_domains(df: pd.DataFrame) -> list[str]:
    """Domains with a nonzero weight in some row, sorted."""
    return sorted(d for d in table_domains(df) if (df[weight_column(d)].fillna(0.0) != 0).any())


def _normalised(df: pd.DataFrame, doms: list[str]) -> np.ndarray:
    w = df[[weight_column(d) for d in doms]].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return w / w.sum(axis=1, keepdims=True)


def _describe(gap: np.ndarray, doms: list[str], a: np.ndarray, b: np.ndarray) -> str:
    k = int(np.argmax(gap))
    return f"weight/{doms[k]} {a[k]:.6g} vs {b[k]:.6g}"


def match_tables(tables: Sequence[pd.DataFrame], names: Sequence[str], tol: float = MATCH_TOL) -> MatchResult:
    """The rows of each table for the mixtures that every table has, in the first table's order."""
    if not tol >= 0:
        raise RegmixError(f"--match-tol: {tol} must be >= 0 (largest difference of a normalised weight)")
    doms = training_domains(tables[0])
    for t, n in zip(tables[1:], names[1:]):
        if training_domains(t) != doms:
            raise RegmixError(f"{n}: training domains {training_domains(t)} differ from {names[0]}'s {doms}; "
                              "give runs over the same training domains")
    ids = [t["run_id"].astype(str).to_numpy() for t in tables]
    weights, usable, dropped = [], [], []
    for t, n, rid in zip(tables, names, ids):
        w = _normalised(t, doms)
        ok = np.isfinite(w).all(axis=1)
        for i in np.flatnonzero(~ok):
            dropped.append(f"{n} run {rid[i]}: weights missing or summing to 0; left out")
        # Two runs of one mixture in one table: which one to use is the user's call, not ours.
        idx = np.flatnonzero(ok)
        if len(idx) > 1:
            gap = np.abs(w[idx][:, None, :] - w[idx][None, :, :]).max(-1)
            np.fill_diagonal(gap, np.inf)
            i, j = np.unravel_index(np.argmin(gap), gap.shape)
            if gap[i, j] <= tol:
                raise RegmixError(f"{n}: runs {rid[idx[i]]} and {rid[idx[j]]} have the same mixture (within {tol:g}); "
                                  "keep one run per mixture (or average them)")
        weights.append(w)
        usable.append(ok)
    ref = weights[0]
    keep = usable[0].copy()
    partner = [np.full(len(ref), -1) for _ in tables]
    partner[0] = np.arange(len(ref))
    hint = None
    for t in range(1, len(tables)):
        w = np.where(usable[t][:, None], weights[t], np.inf)
        for i in np.flatnonzero(usable[0]):
            gap = np.abs(w - ref[i]).max(axis=1)
            j = int(np.argmin(gap)) if len(gap) else -1
            if j >= 0 and gap[j] <= tol and j not in partner[t][keep]:
                partner[t][i] = j
                continue
            if keep[i]:
                msg = f"{names[0]} run {ids[0][i]}: no mixture within {tol:g} in {names[t]}"
                if j >= 0 and np.isfinite(gap[j]) and gap[j] <= NEAR_MISS:
                    near = (f"nearest is run {ids[t][j]}, {gap[j]:.2g} away "
                            f"({_describe(np.abs(weights[t][j] - ref[i]), doms, ref[i], weights[t][j])}); "
                            "raise --match-tol to accept it")
                    msg += f" ({near})"
                    hint = hint or f"{names[0]} run {ids[0][i]} vs {names[t]} run {ids[t][j]}: {near}"
                dropped.append(msg + "; left out")
            keep[i] = False
    rows = np.flatnonzero(keep)
    for t in range(1, len(tables)):
        used = set(partner[t][rows].tolist())
        for j in np.flatnonzero(usable[t]):
            if j not in used:
                dropped.append(f"{names[t]} run {ids[t][j]}: its mixture is not in every table; left out")
    if not len(rows):
        extra = f"; closest: {hint}" if hint else ""
        raise RegmixError(f"{', '.join(names)}: no mixture appears in all tables (weights equal within {tol:g}); "
                          f"run the same mixtures at each scale{extra}")
    out = [t.iloc[partner[k][rows]].reset_index(drop=True) for k, t in enumerate(tables)]
    return MatchResult(out, dropped)
