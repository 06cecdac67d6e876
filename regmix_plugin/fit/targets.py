"""What to predict: one metric column, a weighted sum of columns, or a mean over a glob of columns.

Grammar of ``--target``::

    valid/pile_cc/loss                              one column
    0.3*valid/a/loss + 0.7*valid/b/loss             a weighted sum (e.g. token-weighted over domains)
    mean(valid/*/loss)                              the unweighted mean of every matching column

Column names contain '/', so terms are split on ' + ' (spaces required) and weights on the first '*'.
A column (or glob) may be named as the source file spells it: RegMix's ``metric/the_pile_pile_cc_val_loss``
is ``valid/pile_cc/loss`` (:func:`regmix_plugin.table.resolve_column`).

Direction: every target is minimised or maximised (``Target.direction``). ``--maximize``/``--minimize`` say so
explicitly; otherwise the default comes from the metric names (:func:`regmix_plugin.table.metric_direction`:
accuracies, exact match, F1, ``valid_avg`` up; losses, bits per byte, perplexities down; an unknown name
down, as before this rule existed), and ``direction_source`` says which rule applied so every command can
print it. The columns of a composite must agree, or the flag must be given. Predictors and CV scores never
see the direction: they fit and score the target as it is; the best run, the search, the reports and
CV's top-10% overlap read it (DECISIONS 67).

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
from regmix_plugin.table import DIRECTIONS, metric_columns, metric_direction, metric_name, normalised_name, resolve_column

_MEAN = re.compile(r"^mean\((.+)\)$")


@dataclass(frozen=True)
class Target:
    """A parsed target: ``sum(w_i * column_i)``; ``expr`` is what the user wrote."""

    expr: str
    terms: tuple[tuple[float, str], ...]
    direction: str = "minimize"
    direction_source: str = "default"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """+1 when lower is better, -1 when higher is: ``sign * y`` is always lower-is-better."""
        return -1.0 if self.maximize else 1.0

    @property
    def better(self) -> str:
        return "higher is better" if self.maximize else "lower is better"

    def describe(self) -> str:
        """One line for people: ``maximize (higher is better; default from the metric name 'acc')``."""
        return f"{self.direction} ({self.better}; {self.direction_source})"

    def best_index(self, y) -> int:
        return int(np.argmin(self.sign * np.asarray(y, float)))

    @property
    def columns(self) -> list[str]:
        return [c for _, c in self.terms]

    def values(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(df))
        for w, c in self.terms:
            out += w * df[c].to_numpy(dtype=float)
        return out

    def to_dict(self) -> dict:
        return {"expr": self.expr, "terms": [[w, c] for w, c in self.terms], "direction": self.direction,
                "direction_source": self.direction_source}

    @classmethod
    def from_dict(cls, doc: dict) -> "Target":
        # Model folders written before targets had a direction were all minimised.
        return cls(doc["expr"], tuple((float(w), c) for w, c in doc["terms"]), doc.get("direction", "minimize"),
                   doc.get("direction_source", "written before directions existed: minimize"))


def target_direction(columns: list[str], direction: str | None, expr: str) -> tuple[str, str]:
    """(direction, where it came from) for a target over ``columns``: ``direction`` when given (the flag),
    else the columns' common default from their names; columns that disagree need the flag."""
    if direction is not None:
        if direction not in DIRECTIONS:
            raise RegmixError(f"--direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
        return direction, f"--{direction}"
    found = {c: metric_direction(c) for c in columns}
    known = {d for d in found.values() if d}
    if len(known) > 1:
        up = next(c for c, d in found.items() if d == "maximize")
        down = next(c for c, d in found.items() if d == "minimize")
        raise RegmixError(f"--target {expr!r}: {up!r} is higher-is-better but {down!r} is lower-is-better; pass "
                          "--maximize or --minimize (and negative weights for the columns that go the other way)")
    if not known:
        return "minimize", (f"no rule for the metric name {metric_name(columns[0])!r}: minimize by default; "
                            "pass --maximize if higher is better")
    d = known.pop()
    names = sorted({metric_name(c) for c, v in found.items() if v})
    return d, f"default from the metric name {', '.join(repr(n) for n in names[:3])}; override with --{'minimize' if d == 'maximize' else 'maximize'}"


def parse_target(expr: str, df: pd.DataFrame, direction: str | None = None) -> Target:
    """Parse ``expr`` against the runs table ``df``; unknown columns give a one-line error listing valid ones.
    ``direction``: ``"minimize"``/``"maximize"``, or None for the default from the columns' names."""
    t = _parse_terms(expr, df)
    return Target(t.expr, t.terms, *target_direction(t.columns, direction, t.expr))


def _parse_terms(expr: str, df: pd.DataFrame) -> Target:
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
