"""Training curves made elsewhere, as run records (`regmix_plugin.collect.record.RunRecord`) with status
``imported``: TensorBoard event files (Megatron-LM's tag names mapped onto the runs-table names) and long
CSV/TSV exports (``run, step, metric, value`` rows, what W&B or a spreadsheet gives).

A run's mixture comes from its directory's ``mixture.json`` (a weights record is enough, see
`regmix_plugin.mixture.weights_record`), from ``weight/<domain>`` columns of the long file, or from a small
mixtures file (:func:`read_mixtures_file`). docs/metrics.md describes the formats.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from regmix_plugin.collect.record import RunRecord
from regmix_plugin.errors import RegmixError
from regmix_plugin.table import IMPORTED, WEIGHT_PREFIX

EVENTS_GLOB = "events.out.tfevents.*"
# Sub-folders where a run keeps its event files: this trainer's tb/, Megatron-LM's usual --tensorboard-dir.
TB_SUBDIRS = ("", "tb", "tensorboard")

# Megatron-LM writes '<key> validation[-<set>]' (training.py, evaluate_and_print_results), the set named by
# --validation-set-names or numbered; the same values again as '... vs samples' and '... ppl' tags.
_MEGATRON_VALID = re.compile(r"^(?P<key>.+?) validation(?:-(?P<set>.+))?$")
_DERIVED = (" vs samples", " ppl")


class CurveImportError(RegmixError):
    """An external curve file or mixtures file is malformed."""


def canonical_metric(name: str) -> str | None:
    """The runs-table name of an external metric name; None for a tag that repeats another one.

    ``lm loss validation-wiki`` -> ``valid/wiki/loss``; ``lm loss validation`` (one validation set) ->
    ``valid/validation/loss``; ``<key> validation-<set>`` -> ``valid/<set>/<key>`` (spaces -> ``_``);
    ``lm loss`` -> ``train/loss``; ``... vs samples`` and ``... ppl`` -> None; any other name as it is.
    """
    name = name.strip()
    if any(name.endswith(d) or f"{d} vs samples" in name for d in _DERIVED):
        return None
    if name == "lm loss":
        return "train/loss"
    m = _MEGATRON_VALID.match(name)
    if m and " " in name:
        key = m.group("key").strip()
        metric = "loss" if key == "lm loss" else re.sub(r"\s+", "_", key)
        return f"valid/{m.group('set') or 'validation'}/{metric}"
    return name


def tensorboard_dir(run_dir: Path) -> Path | None:
    """The folder of ``run_dir`` that holds TensorBoard event files (itself, tb/ or tensorboard/), if any."""
    for sub in TB_SUBDIRS:
        d = run_dir / sub if sub else run_dir
        if d.is_dir() and any(d.glob(EVENTS_GLOB)):
            return d
    return None


def read_tensorboard(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of one run's event files, read by TensorBoard's own reader: ``{metric: [(step, value)]}``.

    TensorBoard drops the events of an interrupted attempt past its restart (``purge_step``, or a restart
    logged in the file), so a resumed run reads like an uninterrupted one.
    """
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:
        raise CurveImportError(f"{tb_dir}: reading TensorBoard files needs the tensorboard package; pip install tensorboard") from None
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0})  # 0: keep every event, not a sample
    try:
        acc.Reload()
    except Exception as e:  # a corrupt file raises several types (DataLossError, struct.error, ...)
        raise CurveImportError(f"{tb_dir}: cannot read the TensorBoard event files ({e.__class__.__name__}: {e})") from None
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags().get(SCALARS, []):
        name = canonical_metric(tag)
        if name is None:
            continue
        out.setdefault(name, []).extend((int(ev.step), float(ev.value)) for ev in acc.Scalars(tag))
    return out


def fill_record(rec: RunRecord, scalars: dict[str, list[tuple[int, float]]]) -> None:
    """Put ``{metric: [(step, value)]}`` into a run record: ``valid/...`` metrics into its evals, ``train/loss``
    into its training curve; ``tokens`` (when given as a metric) goes with both."""
    tokens = dict(scalars.get("tokens", []))
    for name, points in scalars.items():
        if name == "tokens":
            continue
        for step, value in points:
            if name == "train/loss":
                rec.train.append((step, value, tokens.get(step)))
            elif name.startswith("valid/"):
                ev = rec.evals.setdefault(step, {})
                ev[name] = value
                if step in tokens:
                    ev["tokens"] = tokens[step]
    rec.train.sort(key=lambda t: t[0])


# ---- mixtures file -----------------------------------------------------------------------------------

def _read_table(path: Path, flag: str) -> pd.DataFrame:
    if not path.is_file():
        raise CurveImportError(f"{flag} {path}: file not found; check the path")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        # Only empty cells are missing: "n/a" or "-" must stay text, to be reported, not silently read as NaN.
        return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])
    except Exception as e:  # pandas raises many types for a bad file
        raise CurveImportError(f"{flag} {path}: cannot read as {'TSV' if sep == chr(9) else 'CSV'} ({e.__class__.__name__}: {e})") from None


def _run_column(df: pd.DataFrame, path: Path, flag: str) -> str:
    for c in ("run", "run_id"):
        if c in df.columns:
            return c
    raise CurveImportError(f"{flag} {path}: no 'run' (or 'run_id') column; name each row's run in one")


def _check_weights(weights: dict[str, float], where: str) -> dict[str, float]:
    for d, w in weights.items():
        if not (np.isfinite(w) and w >= 0):
            raise CurveImportError(f"{where}, {d}: weight {w!r} must be a finite number >= 0")
    if not sum(weights.values()) > 0:
        raise CurveImportError(f"{where}: the weights sum to 0; give at least one training domain a positive weight")
    return weights


def read_mixtures_file(path: str | Path) -> dict[str, dict[str, float]]:
    """Weights per run from a small CSV/TSV: a ``run`` column and one column per training domain (named
    ``<domain>`` or ``weight/<domain>``), one row per run. Weights are kept as written."""
    path = Path(path)
    df = _read_table(path, "--mixtures")
    key = _run_column(df, path, "--mixtures")
    doms = [c for c in df.columns if c != key]
    if not doms:
        raise CurveImportError(f"--mixtures {path}: no domain columns; give one column of weights per training domain")
    out: dict[str, dict[str, float]] = {}
    for i, row in df.iterrows():
        run = str(row[key])
        if run in out:
            raise CurveImportError(f"--mixtures {path} line {i + 2}: run {run!r} appears twice; give one row per run")
        vals = pd.to_numeric(row[doms], errors="coerce")
        bad = [c for c in doms if pd.isna(vals[c])]
        if bad:
            raise CurveImportError(f"--mixtures {path} line {i + 2}, column {bad[0]}: {row[bad[0]]!r} is not a weight; "
                               "write a number >= 0 (0 for a domain the run did not train on)")
        weights = {c[len(WEIGHT_PREFIX):] if c.startswith(WEIGHT_PREFIX) else c: float(vals[c]) for c in doms}
        out[run] = _check_weights(weights, f"--mixtures {path} line {i + 2}")
    return out


# ---- long curve files ----------------------------------------------------------------------------------

LONG_COLUMNS = ("step", "metric", "value")


def read_long_curves(path: str | Path, mixtures: dict[str, dict[str, float]] | None, warnings: list[str]) -> list[RunRecord]:
    """Run records from a long CSV/TSV: columns ``run`` (or ``run_id``), ``step``, ``metric``, ``value``, and
    optionally ``tokens`` and ``weight/<domain>`` columns (the run's mixture, the same on each of its rows).

    Metric names go through :func:`canonical_metric` (a W&B export of a Megatron-LM run keeps its TensorBoard
    names). A run's mixture comes from its weight columns, else from ``mixtures``; a run with neither keeps
    empty weights (the caller decides whether that is an error). A step repeated with another value (a
    resumed run logged twice) keeps the later row, with a warning.
    """
    path = Path(path)
    df = _read_table(path, "--curves")
    key = _run_column(df, path, "--curves")
    for c in LONG_COLUMNS:
        if c not in df.columns:
            raise CurveImportError(f"--curves {path}: no {c!r} column; a long curve file has run, step, metric, value")
    for c in ("step", "value") + (("tokens",) if "tokens" in df.columns else ()):
        num = pd.to_numeric(df[c], errors="coerce")
        # A missing value or tokens count (empty, NaN: a diverged eval) is kept as NaN; text is an error.
        bad = num.isna() if c == "step" else num.isna() & ~df[c].astype(str).str.strip().str.lower().isin(["nan"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise CurveImportError(f"--curves {path} line {i + 2}, column {c}: {df[c].iloc[i]!r} is not a number; fix or "
                               "delete the row")
        df[c] = num
    wcols = [c for c in df.columns if c.startswith(WEIGHT_PREFIX)]
    records = []
    for run, part in df.groupby(df[key].astype(str), sort=False):
        rec = RunRecord(run_id=run, status=IMPORTED, weights=None)
        if wcols:
            w = part[wcols].apply(pd.to_numeric, errors="coerce")
            if (w.nunique(dropna=False) > 1).any():
                col = wcols[int(np.argmax((w.nunique(dropna=False) > 1).to_numpy()))]
                raise CurveImportError(f"--curves {path}, run {run!r}, column {col}: the weight changes between rows; "
                                   "a run has one mixture")
            rec.weights = _check_weights({c[len(WEIGHT_PREFIX):]: float(w[c].iloc[0]) for c in wcols},
                                         f"--curves {path}, run {run!r}")
        elif mixtures is not None and run in mixtures:
            rec.weights = dict(mixtures[run])
        scalars: dict[str, list[tuple[int, float]]] = {}
        seen: dict[tuple[str, int], float] = {}
        repeated = 0
        for step, metric, value in zip(part["step"].astype(int), part["metric"].astype(str), part["value"]):
            name = canonical_metric(metric)
            if name is None:
                continue
            if (name, step) in seen and seen[(name, step)] != value:
                repeated += 1
            seen[(name, step)] = float(value)
        for (name, step), value in seen.items():
            scalars.setdefault(name, []).append((step, value))
        if "tokens" in part.columns:
            scalars["tokens"] = [(int(s), float(t)) for s, t in zip(part["step"], part["tokens"]) if pd.notna(t)]
        if repeated:
            warnings.append(f"{path.name}: run {run}: {repeated} step(s) logged twice with different values; "
                            "kept the later row (a resumed run?)")
        fill_record(rec, scalars)
        records.append(rec)
    if not records:
        raise CurveImportError(f"--curves {path}: no rows; export at least one run's curve")
    return records


