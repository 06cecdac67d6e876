"""One run's record as the collector reads it, from a run directory or an imported curve file, and its eval curve."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from regmix_plugin.table import eval_columns


@dataclass
class RunRecord:
    run_id: str
    status: str
    weights: dict[str, float] | None
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> {valid/<set>/<metric>..., tokens}
    train: list[tuple[int, float, Any]] = field(default_factory=list)  # (step, train/loss, tokens)
    split: str | None = None  # "train" or "heldout" for synthesized mixtures (from the mixture's provenance)
    path: Path | None = None  # the run directory, for records read from one
    # a schedule run's phase starts as fractions of training ([0, 0.8]); its weights are then keyed p<k>/<domain>
    phase_starts: list[float] | None = None


def record_curve(rec: RunRecord) -> pd.DataFrame:
    """A run record's eval curve: one row per eval step with ``step``, ``tokens`` when known, and every
    evaluation metric (``valid/<set>/<metric>``)."""
    rows = []
    for step, ev in sorted(rec.evals.items()):
        vals = {k: v for k, v in ev.items() if k in eval_columns(list(ev))}
        if vals:
            row = {"step": step, **vals}
            if ev.get("tokens") is not None:
                row["tokens"] = ev["tokens"]
            rows.append(row)
    if not rows:
        return pd.DataFrame({"step": []})
    return pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce").reset_index(drop=True)
