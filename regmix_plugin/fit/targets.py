"""What to predict: one metric column, a weighted sum of columns, or a mean over a glob of columns.

Grammar of ``--target``::

    valid/pile_cc/loss                              one column
    0.3*valid/a/loss + 0.7*valid/b/loss             a weighted sum (e.g. token-weighted over domains)
    mean(valid/*/loss)                              the unweighted mean of every matching column

Column names contain '/', so terms are split on ' + ' (spaces required) and weights on the first '*'.
A column (or glob) may be named as the source file spells it: RegMix's ``metric/the_pile_pile_cc_val_loss``
is ``valid/pile_cc/loss`` (:func:`regmix_plugin.table.resolve_column`).

Missing values: a run without a value in one of the target's columns has no target and is left out of
the fit, listed by id (``fit_model``); :func:`missing_report` says which columns were missing how often, so
a ``mean(GLOB)`` over many downstream tasks can be narrowed when one task is missing on many runs.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from regmix_plugin.errors import RegmixError
from regmix_plugin.table import metric_columns, normalised_name, resolve_column

_MEAN = re.compile(r"^mean\((.+)\)$")


@dataclass(frozen=True)
class Target:
    """A parsed target: ``sum(w_i * column_i)``; ``expr`` is what the user wrote."""

    expr: str
    terms: tuple[tuple[float, str], ...]

    @property
    def columns(self) -> list[str]:
        return [c for _, c in self.terms]

    def values(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(df))
        for w, c in self.terms:
            out += w * df[c].to_numpy(dtype=float)
        return out

    def to_dict(self) -> dict:
        return {"expr": self.expr, "terms": [[w, c] for w, c in self.terms]}


def parse_target(expr: str, df: pd.DataFrame) -> Target:
    """Parse ``expr`` against the runs table ``df``; unknown columns give a one-line error listing valid ones."""
    if not isinstance(expr, str) or not expr.strip():
        raise RegmixError("--target: empty; give a metric column such as valid/<domain>/loss, a weighted sum, or mean(GLOB)")
    expr = expr.strip()
    metrics = metric_columns(df)
    m = _MEAN.match(expr)
    if m:
        cols = [c for c in metrics if fnmatch.fnmatchcase(c, m.group(1))]
        if not cols:  # the glob as the source file spells its columns
            cols = [c for c in metrics if fnmatch.fnmatchcase(c, normalised_name(m.group(1)))]
        if not cols:
            raise RegmixError(f"--target: {m.group(1)!r} matches no metric column; metric columns are {_preview(metrics)}")
        return Target(expr, tuple((1.0 / len(cols), c) for c in cols))
    terms = []
    for part in expr.split(" + "):
        part = part.strip()
        w, col = 1.0, part
        if "*" in part:
            head, rest = part.split("*", 1)
            try:
                w, col = float(head), rest.strip()
            except ValueError:
                w, col = 1.0, part
        col = resolve_column(col, df.columns) or col
        if col not in df.columns:
            raise RegmixError(f"--target: column {col!r} is not in the runs table; metric columns are {_preview(metrics)}")
        if col not in metrics:
            raise RegmixError(f"--target: column {col!r} is not numeric; choose a metric column such as {_preview(metrics)}")
        terms.append((w, col))
    return Target(expr, tuple(terms))


def missing_report(df: pd.DataFrame, target: Target, n: int = 3) -> str:
    """``'colA' on 5 runs, 'colB' on 2 runs``: the target's columns with missing values, most often missing
    first (at most ``n`` named); empty when none is missing."""
    counts = {c: int(df[c].isna().sum()) for c in target.columns}
    worst = sorted((c for c in counts if counts[c]), key=lambda c: -counts[c])
    text = ", ".join(f"{c!r} on {counts[c]} run(s)" for c in worst[:n])
    return text + (f" (+{len(worst) - n} more columns)" if len(worst) > n else "")


def _preview(cols: list[str], n: int = 8) -> str:
    if not cols:
        return "(none)"
    more = f" (+{len(cols) - n} more)" if len(cols) > n else ""
    return ", ".join(cols[:n]) + more
