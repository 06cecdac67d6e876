"""The reduced runs table: the reuse sweep's runs, and the old runs that are points of the reduced simplex.

The fitter sees ``weight/<frozen>`` and ``weight/<free domain>`` columns; the metric columns (every real
domain's validation loss) are kept as they are, so targets are written as for a full study.

An old run is a valid row only when it is a point of the reduced simplex trained on the same data and at
the same proxy budget: weight 0 on every updated and removed domain (it read their old data otherwise),
its untouched domains in the frozen ratios (within ``tolerance``), and the same ``tokens`` as the new runs
when both tables say. Runs of a full RegMix swarm almost never pass the ratio test: a Dirichlet draw does
not keep the old optimum's ratios. And an old run has no loss on an added domain, so a target that uses
that loss (a mean over all domains, say) leaves it out all the same; ``regmix fit`` drops rows without the
target. Reused rows get run ids ``old-<run_id>`` and ``source`` ``reuse:old``; new rows ``reuse:new``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from regmix_plugin.reuse_plan import DEFAULT_TOLERANCE, ReuseError, ReusePlan
from regmix_plugin.table import WEIGHT_PREFIX, domains, weight_column

SOURCE = "source"


def _weights(row: pd.Series, names: list[str]) -> dict[str, float]:
    return {n: row[weight_column(n)] for n in names}


def _reduced_frame(df: pd.DataFrame, reduced: list[dict[str, float]], names: list[str], source: str) -> pd.DataFrame:
    keep = df[[c for c in df.columns if not c.startswith(WEIGHT_PREFIX) and c != SOURCE]].reset_index(drop=True)
    w = pd.DataFrame([[r[n] for n in names] for r in reduced], columns=[weight_column(n) for n in names])
    head = keep[[c for c in ("run_id", "status", "split") if c in keep.columns]]
    rest = keep.drop(columns=head.columns)
    out = pd.concat([head, w, rest], axis=1)
    out[SOURCE] = source
    return out


def reduce_runs(plan: ReusePlan, new: pd.DataFrame, old: pd.DataFrame | None = None,
                tolerance: float = DEFAULT_TOLERANCE) -> tuple[pd.DataFrame, list[str]]:
    """``(reduced table, report lines)``: every new run, plus the old runs that are valid rows."""
    names = plan.reduced_names
    new_domains = domains(new)
    reduced, report = [], []
    for _, row in new.iterrows():
        r, why = plan.reduce(_weights(row, new_domains), old=False, tolerance=tolerance)
        if r is None:
            raise ReuseError(f"--runs: run {row['run_id']} {why}; give the runs of this plan's reuse sweep "
                             "(`regmix collect` of its out folder)")
        reduced.append(r)
    out = _reduced_frame(new, reduced, names, "reuse:new")
    report.append(f"{len(out)} runs of the reuse sweep")
    if old is None:
        return out, report

    old_domains = domains(old)
    tokens = new["tokens"].dropna().unique() if "tokens" in new.columns else np.array([])
    kept_rows, kept, reasons = [], [], Counter()
    for i, row in old.iterrows():
        if len(tokens) == 1 and "tokens" in old.columns and pd.notna(row["tokens"]) and row["tokens"] != tokens[0]:
            reasons[f"trained on {row['tokens']:.0f} tokens, the new runs on {tokens[0]:.0f}"] += 1
            continue
        r, why = plan.reduce(_weights(row, old_domains), old=True, tolerance=tolerance)
        if r is None:
            reasons[why.split(" (off by")[0]] += 1
            continue
        kept_rows.append(i)
        kept.append(r)
    report.append(f"{len(kept)} of {len(old)} old runs reused")
    report += [f"  {n} left out: {why}" for why, n in reasons.most_common()]
    if kept:
        rows = old.loc[kept_rows].copy()
        rows["run_id"] = "old-" + rows["run_id"].astype(str)
        old_part = _reduced_frame(rows, kept, names, "reuse:old")
        lacking = [c for c in out.columns if c.startswith("valid/") and c not in old_part.columns]
        if lacking:
            report.append(f"  the reused old runs have no {', '.join(lacking)} (new domains): a target that uses "
                          "it leaves them out")
        out = pd.concat([out, old_part], ignore_index=True)
    return out, report
