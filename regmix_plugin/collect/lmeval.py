"""lm-evaluation-harness results -> runs-table columns: one run per subfolder, every task/metric a column.

The layout followed is lm-evaluation-harness 0.4.x's (read from 0.4.9.1's ``EvaluationTracker.save_results_
aggregated``; lm-eval is not a dependency): ``lm_eval --output_path OUT`` writes
``OUT/<model_name_sanitized>/results_<ISO time with ':' as '-'>.json`` (or ``OUT_<time>.json`` when OUT ends in
``.json``), whose ``results`` maps each task (and group) to ``{"alias": ..., "<metric>,<filter>": value,
"<metric>_stderr,<filter>": stderr}`` and whose ``higher_is_better`` maps task -> metric -> bool. NVIDIA's
CLIMB tutorial runs it once per proxy with ``--output_path RESULTS/n<i>``.

So a run is a subfolder of the folder given; its results file is the newest ``results_*.json`` anywhere under
it (newest by the time in its name, which sorts as text; an evaluation rerun writes a new file beside the old).
Columns: ``lmeval/<task>/<metric>`` for the ``none`` filter, ``lmeval/<task>/<metric>,<filter>`` otherwise,
and ``lmeval/<task>/<metric>_stderr`` beside each (stderr ``"N/A"`` becomes empty). Values are kept in
lm-eval's units (accuracies in [0, 1]).

Bad input is one line naming the file: a subfolder without a results file, a file that is not JSON or has no
``results``, a task present in some runs and missing in others (a mean over tasks would silently differ
between runs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from regmix_plugin.errors import RegmixError

LAYOUT_VERSION = "lm-evaluation-harness 0.4.x (EvaluationTracker of 0.4.9.1)"
PREFIX = "lmeval/"
# CLIMB's target: the mean of these three, x100 (its 8_predict.py's `valid_avg`).
CLIMB_VALID_AVG = ("lmeval/arc_easy/acc", "lmeval/piqa/acc_norm", "lmeval/hellaswag/acc_norm")


def newest_results_file(folder: Path) -> Path:
    files = sorted(folder.rglob("results_*.json"), key=lambda p: (p.name, str(p)))
    if not files:
        raise RegmixError(f"--lm-eval {folder}: no results_*.json under this run's folder; run lm_eval with "
                          f"--output_path {folder} (or remove the folder)")
    return files[-1]


def _column(task: str, key: str) -> str | None:
    """``acc,none`` -> ``lmeval/<task>/acc``; ``acc_stderr,none`` -> ``lmeval/<task>/acc_stderr``; None for
    ``alias`` and other keys that are not metrics."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    return f"{PREFIX}{task}/{metric}" + ("" if filt == "none" else f",{filt}")


def read_results_file(path: Path) -> tuple[dict[str, float], list[str]]:
    """The metric columns of one lm-eval results file, and warnings (metrics whose ``higher_is_better`` disagrees
    with the direction their name gives)."""
    from regmix_plugin.table import metric_direction

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegmixError(f"--lm-eval {path}: not a JSON file ({e.__class__.__name__}: {e}); give lm_eval's "
                          "results_*.json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict) or not doc["results"]:
        raise RegmixError(f"--lm-eval {path}: no 'results' object (task -> metrics); is this an lm-evaluation-"
                          "harness results file?")
    row: dict[str, float] = {}
    tables = [doc.get("groups") or {}, doc["results"]]  # a task's own entry wins over its group entry
    for table in tables:
        for task, metrics in table.items():
            if not isinstance(metrics, dict):
                continue
            for key, value in metrics.items():
                col = _column(str(task), str(key))
                if col is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    if "_stderr" in key:  # lm-eval writes "N/A" when it cannot bootstrap one
                        row[col] = math.nan
                        continue
                    raise RegmixError(f"--lm-eval {path}: results.{task}[{key!r}] is {value!r}, not a number")
                row[col] = float(value)
    warnings = []
    for task, hib in (doc.get("higher_is_better") or {}).items():
        for metric, up in (hib or {}).items() if isinstance(hib, dict) else ():
            named = metric_direction(metric)
            if named and isinstance(up, bool) and (named == "maximize") != up:
                warnings.append(f"{path}: lm-eval says {task}/{metric} is {'higher' if up else 'lower'}-is-better but "
                                f"its name defaults to {named}; pass --{'maximize' if up else 'minimize'} to regmix fit")
    return row, warnings


def read_lmeval_folder(folder: str | Path, warnings: list[str] | None = None) -> pd.DataFrame:
    """One row per subfolder of ``folder`` (``run_id`` = the subfolder's name) with its newest results' columns,
    plus CLIMB's ``valid_avg`` when its three tasks are there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegmixError(f"--lm-eval {folder}: not a folder; give the folder with one subfolder of lm_eval output per run")
    subs = sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: _natural(d.name))
    if not subs:
        raise RegmixError(f"--lm-eval {folder}: no subfolders; lm_eval's output of each run goes in a subfolder named "
                          "after the run")
    rows, files = [], []
    for d in subs:
        path = newest_results_file(d)
        row, warns = read_results_file(path)
        if warnings is not None:
            warnings.extend(warns)
        rows.append({"run_id": d.name, **row})
        files.append(path)
    _check_same_tasks(rows, files)
    df = pd.DataFrame(rows)
    if all(c in df.columns for c in CLIMB_VALID_AVG):
        df["valid_avg"] = 100.0 * df[list(CLIMB_VALID_AVG)].mean(axis=1)
    return df


def _check_same_tasks(rows: list[dict], files: list[Path]) -> None:
    every = set().union(*(set(r) for r in rows)) - {"run_id"}
    for r, path in zip(rows, files):
        missing = sorted(c for c in every - set(r) if not c.endswith("_stderr"))
        if missing:
            other = next(f for rr, f in zip(rows, files) if missing[0] in rr)
            raise RegmixError(f"--lm-eval {path}: no {missing[0]!r} (+{len(missing) - 1} more), which {other} has; "
                              "evaluate every run on the same tasks (or move this run out of the folder)")


def _natural(name: str):
    """n2 before n10, as CLIMB's `sort -V` orders its runs."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
