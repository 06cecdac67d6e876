"""The runs table: one row per proxy run, the hand-off between the sweep collector and the fitter.

Columns (a tidy CSV, or Parquet):

- ``run_id`` (str) and ``status`` (``completed`` | ``failed`` | ``running`` | ``pending`` | ``imported``;
  imported: results brought in from elsewhere, or predicted by a law, not runs of a sweep);
- ``weight/<domain>``: the run's mixture weight for each *training* domain (rows sum to 1 within rounding);
- metric columns, by convention ``valid/<set>/loss`` (validation loss on one evaluation set), ``train/loss``,
  ``tokens``, ``step``; any other numeric column (a downstream benchmark, say) is a metric too.

Evaluation sets are not training domains: ``valid/<set>/<metric>`` columns name what was measured
(``valid/wiki/loss``, ``valid/arc_easy/bpb``), whether or not ``<set>`` has a ``weight/`` column.
:func:`eval_columns` selects them (the scaling stage fits a law to each).

Multi-phase schedules (docs/phases.md) use one naming rule: ``weight/p<k>/<domain>`` is phase ``k``'s weight
on a domain (phases counted from 0, each phase's weights summing to 1) and ``phase/p<k>/start`` is where phase
``k >= 1`` begins, as a fraction of training. Domain names never hold ``/``, so the ``domains`` of such a table
are ``p0/<d>..., p1/<d>...``: every predictor fits the concatenated phase weights as they are, and
:func:`phase_layout` reads the phases back. Marin's swarms spell them ``phase_0_<domain>`` (imported by
:func:`from_marin_csv`).

Domain order is the order of the ``weight/`` columns. Importers for RegMix's and Olmix's released CSVs
map their column names onto this schema, so every later stage sees one format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_bytes, atomic_write_text

WEIGHT_PREFIX = "weight/"
ID_COLUMNS = ("run_id", "status", "round")  # round: which search round a run belongs to (not a metric)
IMPORTED = "imported"  # status of rows that are not runs of a sweep: external results, law predictions
# Default evaluation metrics: one per evaluation set and metric (``valid/<set>/<metric>``); the aggregate
# ``valid/loss`` (one slash) is left out.
EVAL_PATTERNS = ("valid/*/*",)


class TableError(RegmixError):
    pass


def weight_column(domain: str) -> str:
    return f"{WEIGHT_PREFIX}{domain}"


PHASE_START = re.compile(r"^phase/p(\d+)/start$")
_PHASE_WEIGHT = re.compile(r"^p(\d+)/(.+)$")


def phase_weight_column(phase: int, domain: str) -> str:
    """``weight/p<k>/<domain>``: phase ``k``'s weight on ``domain`` (the runs table's one naming rule)."""
    return f"{WEIGHT_PREFIX}p{phase}/{domain}"


def phase_start_column(phase: int) -> str:
    """``phase/p<k>/start``: where phase ``k`` begins, as a fraction of training."""
    return f"phase/p{phase}/start"


def phase_layout(df: pd.DataFrame) -> tuple[list[str], list[float]] | None:
    """``(domains, starts)`` of a schedule runs table (``starts[0] == 0``), None for a single-mixture table.

    Every phase lists the same domains in the same order, and every run has the same boundaries (a boundary
    varying between runs is not a searched variable here yet)."""
    names = domains(df)
    parsed = [_PHASE_WEIGHT.match(n) for n in names]
    if not any(parsed):
        return None
    if not all(parsed):
        plain = names[[m is None for m in parsed].index(True)]
        raise TableError(f"{WEIGHT_PREFIX}{plain}: a table with per-phase columns (weight/p<k>/<domain>) cannot "
                         "also have single-mixture ones; give every weight per phase")
    phases: dict[int, list[str]] = {}
    for m in parsed:
        phases.setdefault(int(m.group(1)), []).append(m.group(2))
    K = len(phases)
    if sorted(phases) != list(range(K)):
        raise TableError(f"weight/p<k>/: phases {sorted(phases)} are not numbered 0..{K - 1}")
    first = phases[0]
    for k in range(1, K):
        if phases[k] != first:
            raise TableError(f"weight/p{k}/: phase {k} lists domains {', '.join(phases[k])} but phase 0 lists "
                             f"{', '.join(first)}; every phase must list the same domains in the same order")
    starts = [0.0]
    for k in range(1, K):
        col = phase_start_column(k)
        if col not in df.columns:
            raise TableError(f"{col}: missing; a schedule runs table says where each phase begins (a fraction)")
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if len(v) and (not (v == v[0]).all() or not 0 < v[0] < 1):
            raise TableError(f"{col}: {sorted(set(v.tolist()))[:3]} must be one fraction in (0, 1) shared by every "
                             "run (a boundary that varies between runs is not supported)")
        starts.append(float(v[0]) if len(v) else float("nan"))
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise TableError(f"phase/p<k>/start: {starts[1:]} are not increasing; phases begin in order")
    return first, starts


def phase_lengths(starts: list[float]) -> list[float]:
    """The share of training each phase covers, from where the phases begin."""
    ends = list(starts[1:]) + [1.0]
    return [e - s for s, e in zip(starts, ends)]


def loss_column(domain: str) -> str:
    return f"valid/{domain}/loss"


def domains(df: pd.DataFrame) -> list[str]:
    return [c[len(WEIGHT_PREFIX):] for c in df.columns if c.startswith(WEIGHT_PREFIX)]


def weight_matrix(df: pd.DataFrame):
    """``(n_runs, n_domains)`` float array of mixture weights, in :func:`domains` order."""
    cols = [weight_column(d) for d in domains(df)]
    if not cols:
        raise TableError("runs table: no weight/<domain> columns; is this a runs table from `regmix collect`?")
    return df[cols].to_numpy(dtype=float)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [
        c for c in df.columns
        if not c.startswith(WEIGHT_PREFIX) and c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(df[c])
    ]


def eval_columns(columns, patterns=None) -> list[str]:
    """The evaluation metrics among ``columns`` (a DataFrame's or a list) matching any glob of ``patterns``
    (default :data:`EVAL_PATTERNS`), in column order."""
    import fnmatch

    cols = list(columns.columns if isinstance(columns, pd.DataFrame) else columns)
    pats = list(patterns or EVAL_PATTERNS)
    return [c for c in cols if not c.startswith(WEIGHT_PREFIX) and any(fnmatch.fnmatchcase(c, p) for p in pats)]


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: runs table not found; produce it with `regmix collect` or check the path")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except Exception as e:  # pandas raises many types for a bad file
        raise TableError(f"{path}: cannot read as a runs table ({e.__class__.__name__}: {e})") from None
    if "run_id" not in df.columns:
        raise TableError(f"{path}: no run_id column; a runs table needs run_id and weight/<domain> columns")
    df["run_id"] = df["run_id"].astype(str)
    if not domains(df):
        raise TableError(f"{path}: no weight/<domain> columns; a runs table needs one per domain")
    return df


def write_runs(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    return atomic_write_text(path, df.to_csv(index=False))


_REGMIX_WEIGHT = re.compile(r"^train_(?:the_pile_)?(.+)$")
_REGMIX_LOSS = re.compile(r"^metric/(?:the_pile_)?(.+)_val_loss$")


def normalised_name(column: str) -> str:
    """The runs-table name of a column as RegMix's released CSVs spell it: ``metric/the_pile_<d>_val_loss``
    is ``valid/<d>/loss`` and ``train_the_pile_<d>`` is ``weight/<d>``; any other name is returned as it is.

    The importer (:func:`from_regmix_csv`) renames with these rules, and :func:`resolve_column` applies the
    same rules to the names a user types, so a column can be named either way wherever one is asked for.
    """
    m = _REGMIX_LOSS.match(column)
    if m:
        return loss_column(m.group(1))
    m = _REGMIX_WEIGHT.match(column)
    return weight_column(m.group(1)) if m else column


def resolve_column(name: str, columns) -> str | None:
    """``name`` if it is one of ``columns``, else its runs-table name (:func:`normalised_name`) if that is one;
    None when neither is. Globs resolve the same way (``metric/the_pile_*_val_loss`` -> ``valid/*/loss``)."""
    cols = set(columns)
    if name in cols:
        return name
    alias = normalised_name(name)
    return alias if alias in cols else None


def weight_domain(column: str) -> str:
    """The domain a weight column names (``weight/<d>``, RegMix's ``train_the_pile_<d>`` or ``train_<d>``);
    any other column name is returned as it is (a plain domain column)."""
    alias = normalised_name(column)
    return alias[len(WEIGHT_PREFIX):] if alias.startswith(WEIGHT_PREFIX) else column


def resolve_domain(name: str, names) -> str | None:
    """A domain named as a runs table (``weight/pile_cc``) or RegMix's mixture CSV (``train_the_pile_pile_cc``)
    spells its weight column, or by its bare name; None when it is none of ``names``."""
    names = set(names)
    if name in names:
        return name
    bare = weight_domain(name)
    return bare if bare in names else None


def from_regmix_csv(mixture_csv: str | os.PathLike, loss_csv: str | os.PathLike) -> pd.DataFrame:
    """RegMix's released pair: ``index,train_the_pile_<d>…`` and ``index,metric/the_pile_<d>_val_loss…``."""
    mix = _read_csv(mixture_csv, "--mixtures")
    loss = _read_csv(loss_csv, "--losses")
    for name, frame, path in (("--mixtures", mix, mixture_csv), ("--losses", loss, loss_csv)):
        if "index" not in frame.columns:
            raise TableError(f"{name} {path}: no 'index' column; RegMix CSVs join mixtures and losses on index")
    wcols = {}
    for c in mix.columns:
        if c == "index":
            continue
        wcols[c] = normalised_name(c) if _REGMIX_WEIGHT.match(c) else weight_column(c)
    lcols = {}
    for c in loss.columns:
        if c == "index":
            continue
        lcols[c] = normalised_name(c) if _REGMIX_LOSS.match(c) else c
    mix = mix.rename(columns=wcols)
    loss = loss.rename(columns=lcols)
    missing = sorted(set(mix["index"]) ^ set(loss["index"]))
    if missing:
        raise TableError(
            f"index: {len(missing)} run(s) appear in only one of --mixtures/--losses (e.g. index {missing[0]}); "
            "give files from the same sweep"
        )
    df = mix.merge(loss, on="index", how="inner", validate="one_to_one")
    df.insert(0, "status", IMPORTED)
    df.insert(0, "run_id", df.pop("index").astype(str))
    return df


_MARIN_WEIGHT = re.compile(r"^phase_(\d+)_(.+)$")


def from_marin_csv(path: str | os.PathLike, starts: list[float], flag: str = "--marin") -> pd.DataFrame:
    """A Marin-style two-phase swarm: one row per run, ``phase_<k>_<domain>`` weight columns, metric columns.

    The run id is the ``run_id``, ``run_name``, ``name`` or ``index`` column (else the row number); weight columns
    become ``weight/p<k>/<domain>``, ``starts`` (where each phase k >= 1 begins, e.g. ``[0.8]``) become
    ``phase/p<k>/start`` columns; the other numeric columns are kept as metrics under their own names."""
    df = _read_csv(path, flag)
    wcols = {c: _MARIN_WEIGHT.match(str(c)) for c in df.columns}
    wcols = {c: m for c, m in wcols.items() if m}
    if not wcols:
        raise TableError(f"{flag} {path}: no phase_<k>_<domain> columns; is this a Marin two-phase swarm?")
    K = 1 + max(int(m.group(1)) for m in wcols.values())
    if len(starts) != K - 1:
        raise TableError(f"--phases: {len(starts)} boundary(ies) given but {path} has {K} phases; give {K - 1}")
    id_col = next((c for c in ("run_id", "run_name", "name", "index") if c in df.columns), None)
    out = pd.DataFrame({"run_id": df[id_col].astype(str) if id_col else [str(i) for i in range(len(df))],
                        "status": IMPORTED})
    by_phase: dict[int, dict[str, str]] = {}
    for c, m in wcols.items():
        by_phase.setdefault(int(m.group(1)), {})[m.group(2)] = c
    names = list(by_phase.get(0, {}))
    for k in range(K):
        cols = by_phase.get(k, {})
        if set(cols) != set(names):
            diff = sorted(set(cols) ^ set(names))
            raise TableError(f"{flag} {path}: phase_{k}_{diff[0]}: phase {k} and phase 0 list different domains; "
                             "every phase needs a column per domain (0 where it does not train)")
        for d in names:  # phase 0's order in every phase
            out[phase_weight_column(k, d)] = pd.to_numeric(df[cols[d]], errors="coerce")
    for k, s in enumerate(starts, start=1):
        out[phase_start_column(k)] = float(s)
    for c in df.columns:
        if c not in wcols and c != id_col and pd.api.types.is_numeric_dtype(df[c]):
            out[str(c)] = df[c]
    phase_layout(out)  # every phase lists the same domains
    return out


def _read_csv(path, flag: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise TableError(f"{flag} {path}: file not found; check the path")
    try:
        return pd.read_csv(path)
    except Exception as e:
        raise TableError(f"{flag} {path}: cannot read as CSV ({e.__class__.__name__}: {e})") from None


# Direction of a metric, from its name: the last part of the column (``lmeval/arc_easy/acc_norm`` ->
# ``acc_norm``; lm-evaluation-harness's filter suffix ``acc,none`` -> ``acc``). Accuracies and scores are
# maximised, losses and perplexities minimised; a name neither list knows keeps the project's historical
# default (minimise), and every command that uses it prints which rule applied (DECISIONS 67).
MAXIMIZE_NAMES = ("acc", "accuracy", "acc_norm", "exact_match", "em", "f1", "valid_avg", "mc1", "mc2", "bleu",
                  "rouge1", "rouge2", "rougeL", "pass@1", "score", "contains", "mcc", "brier_skill")
MINIMIZE_NAMES = ("loss", "bpb", "bits_per_byte", "perplexity", "ppl", "word_perplexity", "byte_perplexity", "nll",
                  "ce", "brier_score", "error", "err")
DIRECTIONS = ("minimize", "maximize")


def metric_name(column: str) -> str:
    """The metric a column names: its last ``/`` part without lm-eval's ``,filter`` suffix or a ``_stderr``."""
    last = normalised_name(str(column)).rsplit("/", 1)[-1].split(",", 1)[0]
    return last.removesuffix("_stderr")


def metric_direction(column: str) -> str | None:
    """``"maximize"``, ``"minimize"``, or None when the column's metric name is in neither list."""
    name = metric_name(column)
    low = name.lower()
    if low.startswith(("neg_", "neg-", "negative_", "minus_")):
        return None  # a negated metric (the old workaround for accuracies): no rule guesses its direction
    if name in MAXIMIZE_NAMES or low in {n.lower() for n in MAXIMIZE_NAMES} or low.startswith(("acc_", "exact_match")) \
            or low.endswith(("_acc", "_acc_norm", "_accuracy", "_exact_match", "_f1")):  # CLIMB's arc_easy_acc
        return "maximize"
    if low in MINIMIZE_NAMES or low.endswith(("_loss", "_perplexity", "_bpb")):
        return "minimize"
    return None
