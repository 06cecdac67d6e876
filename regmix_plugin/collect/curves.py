"""Runs' evaluation curves: one row per eval step, read from a run directory through the collector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from regmix_plugin.collect.record import record_curve
from regmix_plugin.collect.rundir import read_run
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.table import eval_columns


def read_run_curve(run_dir: str | os.PathLike) -> tuple[dict[str, float] | None, pd.DataFrame]:
    """A run's mixture weights and its eval curve (:func:`record_curve`), from ``metrics.jsonl`` or, lacking
    one, TensorBoard event files.

    Parsing is the collector's (`regmix_plugin.collect.rundir.read_run`: torn lines skipped, a resumed
    run's repeated steps merged). Weights come from the run's ``mixture.json`` (sweep runs, imported runs) or
    else from the mixture that its ``config.yaml`` names (a plain ``regmix train`` run); None when neither.
    """
    run_dir = Path(run_dir)
    rec = read_run(run_dir, [])
    curve = record_curve(rec)
    if len(curve) == 0:
        raise RegmixError(f"{run_dir}: no evaluations (valid/<set>/<metric> in metrics.jsonl or TensorBoard files); "
                          "give a run directory that reached its first eval")
    return rec.weights, curve


def read_eval_curve(run_dir: str | os.PathLike) -> pd.DataFrame:
    return read_run_curve(run_dir)[1]


def curve_metrics(curve: pd.DataFrame, patterns: Sequence[str] | None = None) -> list[str]:
    """The evaluation metrics of a curve that laws are fitted to (default: every ``valid/<set>/<metric>``)."""
    return eval_columns(curve, patterns)


def curves_to_fit(records, notes: list[str]) -> tuple[dict[str, tuple[dict[str, float], pd.DataFrame]], list]:
    """run id -> (weights, eval curve) of the run records a step law can be fitted to, and those records.

    A running run's early curve is what a step law is for; a failed one may end in NaN or a crash, and is
    skipped with a note, as is a run with no evaluations yet."""
    runs, used = {}, []
    for rec in records:
        if rec.status == "failed":
            notes.append(f"{rec.run_id}: the run failed; skipped")
            continue
        curve = record_curve(rec)
        if len(curve) == 0:
            notes.append(f"{rec.run_id}: no evaluations yet; skipped")
            continue
        if rec.weights is None:
            raise ConfigError(f"{rec.run_id}: no mixture (mixture.json, the mixture in config.yaml, weight/<domain> "
                              "columns, or a row in --mixtures); cannot tell the run's weights")
        if rec.run_id in runs:
            raise ConfigError(f"{rec.run_id}: two runs have this id; rename one (a run directory, or the run column)")
        runs[rec.run_id] = (rec.weights, curve)
        used.append(rec)
    return runs, used
