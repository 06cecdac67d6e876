"""``regmix collect``: run directories and external result files -> one runs table, plus a warnings list.

From a run directory (`regmix_plugin.collect.rundir`) we read ``mixture.json`` (weights, as written: never
renormalised here; a weights record without prefixes is enough, `regmix_plugin.mixture.weights_record`),
``status.json`` (or ``outcome.json``) and ``metrics.jsonl``, or, when there is no ``metrics.jsonl``,
TensorBoard event files (`regmix_plugin.collect.imported`). A directory that no sweep or trainer manages (no
``status.json``, ``outcome.json`` or ``config.yaml``) holds curves made elsewhere: its status is
``imported``. Each row holds the per-domain validation losses at one step: by default the last step at which
every completed run has an evaluation (so all rows are comparable), or ``step=N``. ``train/loss`` is the
last training loss at or before that step.

External results join the same table: RegMix's CSV pair (:func:`regmix_plugin.table.from_regmix_csv`),
Olmix's ``*_ratios.csv``/``*_metrics.csv`` pair (:func:`from_olmix_csv`) and long curve files
(`regmix_plugin.collect.imported.read_long_curves`).

Problems are reported, not fixed: mixtures that do not sum to 1 (within the rounding their weights show), missing domains
(left empty, not zero-filled), duplicated run ids or duplicated mixtures, runs lacking the chosen step,
unreadable metric lines. :func:`collect` returns them as a list of one-line warnings.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regmix_plugin.collect.imported import read_long_curves, read_mixtures_file
from regmix_plugin.collect.record import RunRecord
from regmix_plugin.collect.rundir import find_run_dirs, read_run
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_text
from regmix_plugin.sweep.state import COMPLETED
from regmix_plugin.table import (
    IMPORTED, PHASE_START, WEIGHT_PREFIX, domains, from_marin_csv, from_regmix_csv, phase_layout, phase_start_column,
    weight_column, write_runs,
)

SUM_TOL = 1e-6  # for weights not rounded to few decimals


def rounding_tolerance(w: np.ndarray) -> float:
    """How far from 1 a row may sum when its weights were rounded to k decimals: ``d * 0.5 * 10**-k``.

    RegMix writes 3 decimals for 17 domains, so its rows sum to 1 within 0.0085, not 0.001.
    """
    vals = w[np.isfinite(w)]
    for k in range(1, 7):
        if np.allclose(vals * 10**k, np.round(vals * 10**k), atol=1e-6):
            return w.shape[1] * 0.5 * 10.0**-k + 1e-9
    return SUM_TOL


def choose_step(records: list[RunRecord], warnings: list[str]) -> int | None:
    """The last step at which every completed (or imported) run has an evaluation."""
    done = [r for r in records if r.status in (COMPLETED, IMPORTED) and r.evals]
    if not done:
        return None
    common = set(done[0].evals)
    for r in done[1:]:
        common &= set(r.evals)
    if not common:
        warnings.append("no evaluation step is common to all completed runs; each row uses its run's last evaluation "
                        "(pass --step N to pick one)")
        return None
    return max(common)


def records_table(records: list[RunRecord], step: int | None, warnings: list[str]) -> pd.DataFrame:
    rows = []
    for r in records:
        row: dict[str, Any] = {"run_id": r.run_id, "status": r.status}
        if r.split is not None:
            row["split"] = r.split
        for d, w in (r.weights or {}).items():
            row[weight_column(d)] = w
        for k, s in enumerate((r.phase_starts or [])[1:], start=1):
            row[phase_start_column(k)] = s
        s = step if step is not None else (max(r.evals) if r.evals else None)
        ev = r.evals.get(s) if s is not None else None
        if ev is None and r.evals and step is not None and r.status == COMPLETED:
            warnings.append(f"{r.run_id}: no evaluation at step {step} (has {min(r.evals)}..{max(r.evals)}); losses left empty")
        if ev is not None:
            row["step"] = s
            row.update({k: v for k, v in ev.items() if k != "tokens"})
        train = [t for t in r.train if s is None or t[0] <= s]
        if train:
            row["train/loss"] = train[-1][1]
        tokens = (ev or {}).get("tokens")
        if tokens is None and train:
            tokens = train[-1][2]
        if tokens is not None:
            row["tokens"] = tokens
        rows.append(row)
    return pd.DataFrame(rows)


# Key columns of Olmix's released swarms besides the run id: a pandas index written without a header
# (read back as "Unnamed: 0"), and the swarm's own row number `index`. Neither is a domain or a metric.
_OLMIX_KEYS = re.compile(r"^(Unnamed: \d+|index)$")


def from_olmix_csv(ratios_csv: str | Path, metrics_csv: str | Path, warnings: list[str]) -> pd.DataFrame:
    """Olmix's swarm pair: ``ratios.csv`` (``run`` or ``run_id``, optional ``name``, one column per domain with
    its weight) and ``metrics.csv`` (the same id column, optional ``name``, one column per metric, e.g.
    ``arc_challenge_bpb``). Domains become ``weight/<domain>``; metric names are kept as they are. The released
    files' row-number columns (an unnamed pandas index, ``index``) are dropped: they are neither."""
    frames = []
    for flag, path in (("--olmix ratios", ratios_csv), ("--olmix metrics", metrics_csv)):
        if not Path(path).is_file():
            raise RegmixError(f"{flag} {path}: file not found; check the path")
        df = pd.read_csv(path)
        key = "run" if "run" in df.columns else "run_id" if "run_id" in df.columns else None
        if key is None:
            raise RegmixError(f"{flag} {path}: no 'run' or 'run_id' column; Olmix CSVs join ratios and metrics on it")
        df = df.drop(columns=[c for c in df.columns if _OLMIX_KEYS.match(str(c))]).rename(columns={key: "run_id"})
        df["run_id"] = df["run_id"].astype(str)
        dup = df["run_id"][df["run_id"].duplicated()].unique()
        if len(dup):
            warnings.append(f"{Path(path).name}: run {dup[0]} appears {int((df['run_id'] == dup[0]).sum())} times "
                            f"({len(dup)} duplicated id(s)); rows kept as they are")
        frames.append(df)
    ratios, metrics = frames
    ratios = ratios.rename(columns={c: weight_column(c) for c in ratios.columns if c not in ("run_id", "name")})
    metrics = metrics.drop(columns=[c for c in ("name",) if c in metrics.columns and "name" in ratios.columns])
    only = sorted(set(ratios["run_id"]) ^ set(metrics["run_id"]))
    if only:
        warnings.append(f"olmix: {len(only)} run(s) appear in only one of ratios/metrics (e.g. {only[0]}); "
                        "their missing values are left empty")
    df = ratios.merge(metrics, on="run_id", how="outer", sort=False)
    # An outer merge sorts the keys; keep the ratios file's run order (then runs only in the metrics file), so
    # row i of the table is row i of the released files and seeded splits of the rows mean the same thing.
    first = {rid: i for i, rid in enumerate(ratios["run_id"])}
    rank = df["run_id"].map(lambda r: first.get(r, len(first)))
    df = df.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True).copy()  # one block: no fragmented insert
    df.insert(1, "status", IMPORTED)
    return df


def check_table(df: pd.DataFrame, warnings: list[str]) -> None:
    """Warnings for sums off 1, missing domains and duplicates (the table is left as it is)."""
    names = domains(df)
    if not names:
        return
    w = df[[weight_column(d) for d in names]].to_numpy(dtype=float)
    tol = rounding_tolerance(w)
    # A schedule table's weights sum to 1 within each phase (weight/p<k>/<domain>).
    blocks: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        m = re.match(r"^(p\d+)/", n)
        blocks.setdefault(m.group(1) if m else "", []).append(j)
    # Whole columns at once, then one pass over the rows: linear in the runs (10,000 in bench/collect.py).
    empty = np.isnan(w)
    totals = {b: np.nansum(w[:, cols], axis=1) for b, cols in blocks.items()}
    for i, (rid, gaps) in enumerate(zip(df["run_id"], empty)):
        missing = [d for d, gap in zip(names, gaps) if gap]
        if missing and len(missing) < len(names):
            warnings.append(f"{rid}: no weight for domain(s) {', '.join(missing)}; left empty, not set to 0")
        for b, total in totals.items():
            if len(missing) < len(names) and not math.isclose(float(total[i]), 1.0, abs_tol=tol):
                where = f"phase {b[1:]} " if b else ""
                warnings.append(f"{rid}: {where}weights sum to {total[i]:.6g}, not 1 (tolerance {tol:.2g} for the "
                                "rounding seen)")
    ids = df["run_id"].astype(str)
    counts = ids.value_counts()
    for rid in sorted(counts.index[counts > 1]):
        warnings.append(f"{rid}: run id appears {int(counts[rid])} times; rows kept, rename or drop one")
    groups: dict[tuple, list[str]] = {}
    for rid, row in zip(ids, w):
        if np.isfinite(row).any():
            groups.setdefault(tuple(None if np.isnan(x) else round(x, 9) for x in row), []).append(rid)
    for same in groups.values():
        if len(same) > 1:
            warnings.append(f"{', '.join(same)}: identical mixtures (duplicate runs)")


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    first = ["run_id", "status"] + [c for c in ("split", "round") if c in df.columns]
    first += [c for c in df.columns if c.startswith(WEIGHT_PREFIX)]
    first += [c for c in df.columns if PHASE_START.match(str(c))]
    lead = [c for c in ("step", "tokens", "train/loss") if c in df.columns]
    valid = [c for c in df.columns if c.startswith("valid/")]
    rest = [c for c in df.columns if c not in first + lead + valid]
    return df[first + lead + valid + rest]


def load_records(run_dirs=(), curves=(), mixtures: str | Path | None = None,
                 warnings: list[str] | None = None) -> list[RunRecord]:
    """Run records from run directories (metrics.jsonl or TensorBoard files) and long curve files; a
    mixtures file gives the weights of runs that carry none."""
    warnings = [] if warnings is None else warnings
    mix = read_mixtures_file(mixtures) if mixtures else None
    records = [read_run(d, warnings, mix) for d in find_run_dirs(list(run_dirs), warnings)] if run_dirs else []
    for path in curves:
        for rec in read_long_curves(path, mix, warnings):
            if rec.weights is None:
                warnings.append(f"{rec.run_id}: no mixture in {Path(path).name} (no weight/<domain> columns) and "
                                "not in --mixtures; its weights are left empty")
            records.append(rec)
    return records


def collect(run_dirs: list[str | Path] = (), step: int | None = None, regmix: list[tuple[str, str]] = (),
            olmix: list[tuple[str, str]] = (), curves: list[str | Path] = (),
            mixtures: str | Path | None = None, lm_eval: list[str | Path] = (),
            climb_mixtures: list[str | Path] = (), climb: list[str | Path] = (),
            climb_csv: list[str | Path] = (), marin: list[str | Path] = (),
            phases: list[float] = (0.8,)) -> tuple[pd.DataFrame, list[str]]:
    """The runs table and its warnings. ``regmix``/``olmix``: (mixture/ratios CSV, loss/metrics CSV) pairs;
    ``curves``: long curve files; ``mixtures``: weights of runs that carry none (see `collect.imported`);
    ``lm_eval``: folders of lm-evaluation-harness results, one subfolder per run (collect/lmeval.py), joined to
    the run directories of the same run id, else to ``climb_mixtures`` (folders of CLIMB n<K>.sh scripts) or
    ``mixtures``; ``climb``: CLIMB working folders; ``climb_csv``: CLIMB's lm_harness_results.csv files
    (collect/climb.py); ``marin``: Marin-style schedule swarms (``phase_<k>_<domain>`` columns) whose phases
    begin at ``phases``."""
    from regmix_plugin.collect.climb import read_climb_folder, read_lm_harness_csv

    warnings: list[str] = []
    frames = []
    if run_dirs or curves:
        records = load_records(run_dirs, curves, mixtures, warnings)
        chosen = step if step is not None else choose_step(records, warnings)
        if records:
            frames.append(records_table(records, chosen, warnings))
    for mix_csv, loss_csv in regmix:
        frames.append(from_regmix_csv(mix_csv, loss_csv))
    for ratios_csv, metrics_csv in olmix:
        frames.append(from_olmix_csv(ratios_csv, metrics_csv, warnings))
    frames += [read_climb_folder(f, warnings) for f in climb]
    frames += [read_lm_harness_csv(f) for f in climb_csv]
    for path in marin:
        frames.append(from_marin_csv(path, list(phases)))
    for folder in lm_eval:
        frames = join_lm_eval(frames, folder, climb_mixtures, mixtures, warnings)
    if not frames:
        raise RegmixError("collect: no runs found; give run directories, --curves, --regmix, --olmix, --lm-eval, "
                          "--climb or --marin")
    df = order_columns(pd.concat(frames, ignore_index=True, sort=False))
    phase_layout(df)  # single mixtures and schedules do not mix; schedules share their domains and boundaries
    check_table(df, warnings)
    return df, warnings


def join_lm_eval(frames: list[pd.DataFrame], folder, climb_mixtures, mixtures, warnings: list[str]) -> list[pd.DataFrame]:
    """``frames`` with one lm-eval results folder joined in: its columns added to the rows of the same run id
    when a frame has them (your own runs' directories), else new rows with the weights of the CLIMB mixture
    scripts or the ``--mixtures`` file; a run found in none is a one-line error naming its folder."""
    from regmix_plugin.collect.climb import join_mixtures, read_mixtures_dir
    from regmix_plugin.collect.imported import read_mixtures_file
    from regmix_plugin.collect.lmeval import read_lmeval_folder

    results = read_lmeval_folder(folder, warnings)
    known = {str(r) for f in frames for r in f["run_id"]}
    mine = results[results["run_id"].isin(known)]
    if len(mine):
        frames = [f.merge(mine, on="run_id", how="left") if f["run_id"].astype(str).isin(mine["run_id"]).any() else f
                  for f in frames]
    rest = results[~results["run_id"].isin(known)]
    if not len(rest):
        return frames
    weights: dict[str, dict[str, float]] = {}
    for d in climb_mixtures:
        weights.update(read_mixtures_dir(d))
    if mixtures:
        weights.update(read_mixtures_file(mixtures))
    if not weights:
        raise RegmixError(f"--lm-eval {folder}: run {rest['run_id'].iloc[0]!r} is not among the run directories given and "
                          "no mixtures were given; pass its run directory, --climb-mixtures DIR (n<K>.sh) or --mixtures FILE")
    df = join_mixtures(rest.reset_index(drop=True), weights, f"--lm-eval {folder}")
    df.insert(1, "status", IMPORTED)
    return frames + [df]


def warnings_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".warnings.txt")


def write_collected(df: pd.DataFrame, warnings: list[str], out: str | Path) -> Path:
    """Write the table and, beside it, ``<stem>.warnings.txt`` (empty when all is well, so none go stale)."""
    path = write_runs(df, out)
    atomic_write_text(warnings_path(out), "".join(w + "\n" for w in warnings))
    return path
