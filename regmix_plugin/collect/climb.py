"""NVIDIA's Nemotron-CLIMB working folder -> runs table (NeMo Curator's ``tutorials/text/nemotron-climb-data-curation``).

CLIMB's loop (its ``e2e.sh``) leaves, under its output folder, for each round K = 1, 2, ...::

    mixtures_K/n<i>.sh                 the proxies' mixtures (export/climb.py reads them)
    lm_eval_results_K/n<i>/<model>/results_<time>.json   each proxy's lm-evaluation-harness scores
    mixtures_<K+1>/lm_harness_results.csv   what 8_predict.py fitted on (written beside the next round)

:func:`read_climb_folder` joins each round's mixtures and results by the proxy's name (``n<i>``): one row per
proxy, ``run_id`` ``r<K>_n<i>`` (``n<i>`` when the folder has one unnumbered ``mixtures``/``lm_eval_results``
pair), a ``round`` column, ``weight/<domain>`` (the prefix's file stem, as CLIMB names domains; a domain a
mixture leaves out has weight 0, as ``8_predict.py`` fills it), the ``lmeval/<task>/<metric>`` columns and
CLIMB's ``valid_avg`` (collect/lmeval.py). :func:`read_lm_harness_csv` reads ``lm_harness_results.csv`` itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from regmix_plugin.collect.lmeval import _natural, read_lmeval_folder
from regmix_plugin.errors import RegmixError
from regmix_plugin.export.climb import read_mixture_sh
from regmix_plugin.table import IMPORTED, metric_direction, weight_column

_ROUND = re.compile(r"^mixtures(?:_(\d+))?$")
# lm_harness_results.csv's columns besides the domains (8_predict.py's load_benchmark_results).
CLIMB_CSV_METRICS = ("arc_easy_acc", "piqa_acc_norm", "hellaswag_acc_norm", "valid_avg")


def read_mixtures_dir(folder: str | Path) -> dict[str, dict[str, float]]:
    """``{n<i>: {domain: weight}}`` from a folder of CLIMB mixture scripts."""
    folder = Path(folder)
    scripts = sorted(folder.glob("n*.sh"), key=lambda p: _natural(p.stem))
    if not scripts:
        raise RegmixError(f"{folder}: no n<K>.sh mixture scripts; give CLIMB's mixtures folder")
    return {p.stem: read_mixture_sh(p).weights for p in scripts}


def _weights_frame(mixtures: dict[str, dict[str, float]]) -> pd.DataFrame:
    names: list[str] = []
    for w in mixtures.values():
        names += [d for d in w if d not in names]
    rows = [{"run_id": run, **{weight_column(d): float(w.get(d, 0.0)) for d in names}} for run, w in mixtures.items()]
    return pd.DataFrame(rows)


def join_mixtures(results: pd.DataFrame, mixtures: dict[str, dict[str, float]], where: str) -> pd.DataFrame:
    """The results' rows with their runs' weights; a run without a mixture script is a one-line error."""
    missing = sorted(set(results["run_id"]) - set(mixtures), key=_natural)
    if missing:
        raise RegmixError(f"{where}: run {missing[0]!r} has lm-eval results but no mixture script {missing[0]}.sh "
                          f"(+{len(missing) - 1} more); give the mixtures folder of the same round")
    return _weights_frame({r: mixtures[r] for r in results["run_id"]}).merge(results, on="run_id", how="left")


def climb_rounds(folder: str | Path) -> list[tuple[int, Path, Path]]:
    """(round, mixtures folder, lm-eval results folder) of each round that has both, in round order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegmixError(f"--climb {folder}: not a folder; give CLIMB's output folder (with mixtures_K and "
                          "lm_eval_results_K)")
    out = []
    for d in folder.iterdir():
        m = _ROUND.match(d.name)
        if not (m and d.is_dir()):
            continue
        res = folder / ("lm_eval_results" + (f"_{m.group(1)}" if m.group(1) else ""))
        if res.is_dir():
            out.append((int(m.group(1) or 0), d, res))
    if not out:
        raise RegmixError(f"--climb {folder}: no mixtures_K folder with a matching lm_eval_results_K; is this CLIMB's "
                          "output folder (e2e.sh's OUTPUT_PATH)?")
    return sorted(out)


def read_climb_folder(folder: str | Path, warnings: list[str] | None = None) -> pd.DataFrame:
    """Every round of a CLIMB working folder as one runs table (see the module docstring)."""
    frames = []
    rounds = climb_rounds(folder)
    for k, mix_dir, res_dir in rounds:
        results = read_lmeval_folder(res_dir, warnings)
        df = join_mixtures(results, read_mixtures_dir(mix_dir), f"--climb {res_dir}")
        if len(rounds) > 1 or k:
            df["run_id"] = [f"r{k}_{r}" for r in df["run_id"]]
        df.insert(1, "round", max(k, 1))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True, sort=False)
    wcols = [c for c in df.columns if c.startswith("weight/")]
    df[wcols] = df[wcols].fillna(0.0)  # a domain a round's scripts never name: weight 0, as CLIMB fills it
    df.insert(1, "status", IMPORTED)
    return df


def read_lm_harness_csv(path: str | Path) -> pd.DataFrame:
    """CLIMB's ``lm_harness_results.csv``: ``model_benchmark_path`` (the run's results folder; its name is the run
    id), the metric columns (``arc_easy_acc``, ``piqa_acc_norm``, ``hellaswag_acc_norm``, ``valid_avg``: x100,
    kept as written), and one weight column per domain."""
    path = Path(path)
    if not path.is_file():
        raise RegmixError(f"--climb-csv {path}: file not found; give CLIMB's lm_harness_results.csv")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise RegmixError(f"--climb-csv {path}: cannot read as CSV ({e.__class__.__name__}: {e})") from None
    if "model_benchmark_path" not in df.columns:
        raise RegmixError(f"--climb-csv {path}: no model_benchmark_path column; is this CLIMB's lm_harness_results.csv?")
    metrics = [c for c in df.columns if c in CLIMB_CSV_METRICS or metric_direction(c) is not None]
    doms = [c for c in df.columns if c != "model_benchmark_path" and c not in metrics]
    if not doms:
        raise RegmixError(f"--climb-csv {path}: no domain weight columns beside {', '.join(metrics)}")
    W = df[doms].apply(pd.to_numeric, errors="coerce")
    bad = np.argwhere(W.isna().to_numpy())
    if len(bad):
        i, j = bad[0]
        raise RegmixError(f"--climb-csv {path} line {i + 2}, column {doms[j]}: {df[doms[j]].iloc[i]!r} is not a weight")
    out = pd.DataFrame({"run_id": [Path(str(p)).name for p in df["model_benchmark_path"]], "status": IMPORTED})
    out = pd.concat([out, W.rename(columns={d: weight_column(d) for d in doms}), df[metrics]], axis=1)
    return out
