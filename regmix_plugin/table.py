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
