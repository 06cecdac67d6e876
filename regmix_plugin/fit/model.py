"""A fitted model folder (``MODEL_DIR``): the predictor artifact plus what later stages need to know.

::

    MODEL_DIR/model.json      domains, target, predictor name, CV table and why it was chosen, runs used,
                              the prior, the best proxy run
    MODEL_DIR/cv.npz          y and out-of-fold predictions (the report's predicted-vs-actual figure)
    MODEL_DIR/predictor/      the predictor artifact (JSON/NPZ/LightGBM text; never pickle)
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.base import FitData, FitError, Predictor
from regmix_plugin.fit.cv import CVResult, kfold_indices, scores, top10_overlap
from regmix_plugin.fit.oof import FoldCache
from regmix_plugin.fit.progress import FitListener
from regmix_plugin.fit.registry import get_predictor, load_predictor, predictor_class
from regmix_plugin.fit.targets import Target, missing_report, parse_target
from regmix_plugin.io import atomic_write_bytes, atomic_write_json
from regmix_plugin.table import domains as table_domains
from regmix_plugin.table import from_regmix_csv, phase_layout, phase_lengths, read_runs, weight_domain, weight_matrix

# Over a schedule runs table (weight/p<k>/<d>) `auto` also scores the phase-aware law, and the control that sees
# only the time-averaged exposure is scored beside every fit (fit/phaselaw.py; docs/phases.md).
PHASE_CANDIDATES = ("phase-law", "averaged-exposure")
PHASE_CONTROL = "averaged-exposure"

MODEL_FORMAT = "regmix-model"
USABLE_STATUS = ("completed", "imported")


@dataclass
class FitConfig:
    """How `regmix fit` fits: the predictor, its hyperparameters, and the CV that scores it."""

    predictor: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    compare: tuple[str, ...] = ()  # extra predictors to put in the CV table beside the chosen one
    folds: int = 5
    seed: int = 0
    direction: str | None = None  # "minimize" | "maximize"; None: the default from the target's metric names
    # Fit on the runs marked ``split = heldout`` too (`regmix collect` marks the mixtures `regmix synthesize`
    # wrote apart); by default they are kept out of the fit and scored (--include-heldout).
    include_heldout: bool = False
    learning_curve: bool = True  # CV at 50/75/100 % of the runs and the projected gain from twice the runs

    def __post_init__(self) -> None:
        predictor_class(self.predictor)
        for c in self.compare:
            predictor_class(c, field="--compare")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise RegmixError(f"--folds: {self.folds!r} must be an integer >= 2")


@dataclass
class FittedModel:
    predictor: Predictor
    domains: list[str]
    target: Target
    cv: list[dict]
    reason: str
    n_runs: int
    dropped: list[str]
    prior: dict[str, float]
    prior_source: str
    best_run: dict[str, Any]
    y: np.ndarray
    oof: dict[str, np.ndarray]
    X: np.ndarray
    interactions: dict[str, Any] = field(default_factory=dict)
    auxiliary: list[str] = field(default_factory=list)  # metric columns fitted beside the target (joint-law)
    selection: dict[str, Any] = field(default_factory=dict)  # how auto chose (its rule, the CV leader, the margin)
    # a schedule model's phases: {"domains": [...], "starts": [0, 0.8], "lengths": [0.8, 0.2]}; {} for a mixture's
    phases: dict[str, Any] = field(default_factory=dict)
    # The held-out runs (split = heldout): how many, whether they were fitted on, and the chosen predictor's
    # score on them when they were not (``heldout_text`` says it in words).
    heldout: dict[str, Any] = field(default_factory=dict)
    # CV of the chosen predictor at 50/75/100 % of the training runs and the projection to twice the runs
    # (fit/learning_curve.py); ``curve_text`` says it in words.
    learning_curve: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> str:
        return getattr(self.predictor, "chosen_", self.predictor.name)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        self.predictor.save(directory / "predictor")
        buf = io.BytesIO()
        np.savez(buf, y=self.y, X=self.X, **{f"oof/{k}": v for k, v in self.oof.items()})
        atomic_write_bytes(directory / "cv.npz", buf.getvalue())
        atomic_write_json(
            directory / "model.json",
            {
                "format": MODEL_FORMAT,
                "version": 1,
                "predictor": self.predictor.name,
                "chosen": self.chosen,
                "reason": self.reason,
                "domains": self.domains,
                "target": self.target.to_dict(),
                "cv": self.cv,
                "n_runs": self.n_runs,
                "dropped_runs": self.dropped,
                "prior": self.prior,
                "prior_source": self.prior_source,
                "best_run": self.best_run,
                "interactions": self.interactions,
                "auxiliary_columns": self.auxiliary,
                "selection": self.selection,
                "phases": self.phases,
                "heldout": self.heldout,
                "learning_curve": self.learning_curve,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FittedModel":
        directory = Path(directory)
        path = directory / "model.json"
        if not path.is_file():
            raise FitError(f"--model {directory}: no model.json; give a folder written by `regmix fit --out`")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != MODEL_FORMAT:
            raise FitError(f"--model {directory}: model.json is not a {MODEL_FORMAT} file; refit with `regmix fit`")
        with np.load(directory / "cv.npz", allow_pickle=False) as z:
            y, X = z["y"], z["X"]
            oof = {k[4:]: z[k] for k in z.files if k.startswith("oof/")}
        t = doc["target"]
        return cls(
            predictor=load_predictor(directory / "predictor"),
            domains=list(doc["domains"]),
            target=Target.from_dict(t),
            cv=list(doc["cv"]),
            reason=doc["reason"],
            n_runs=int(doc["n_runs"]),
            dropped=list(doc["dropped_runs"]),
            prior={k: float(v) for k, v in doc["prior"].items()},
            prior_source=doc["prior_source"],
            best_run=doc["best_run"],
            y=y,
            oof=oof,
            X=X,
            interactions=doc.get("interactions", {}),
            auxiliary=list(doc.get("auxiliary_columns", [])),
            selection=dict(doc.get("selection", {})),
            phases=dict(doc.get("phases", {})),
            heldout=dict(doc.get("heldout", {})),
            learning_curve=dict(doc.get("learning_curve", {})),
        )

    def heldout_text(self) -> str:
        """One line on the held-out runs: their score, or that they were fitted on; empty when there are none."""
        return heldout_text(self.heldout)

    def curve_text(self) -> str:
        from regmix_plugin.fit.learning_curve import curve_text

        return curve_text(self.learning_curve, self.chosen, int(self.learning_curve.get("folds", 0)))

    def cv_score(self, metric: str = "spearman") -> float | None:
        for row in self.cv:
            if row["predictor"] == self.chosen:
                return float(row[metric])
        return None


def load_runs_table(runs=None, mixtures: str | None = None, losses: str | None = None) -> pd.DataFrame:
    """A runs table from `regmix collect` (``--runs``: one path, or several: the union of rounds) or RegMix's CSV
    pair (``--mixtures`` + ``--losses``)."""
    if runs and (mixtures or losses):
        raise RegmixError("--runs: give either --runs or --mixtures with --losses, not both")
    if isinstance(runs, (list, tuple)):
        return union_of_rounds(list(runs)) if len(runs) > 1 else read_runs(runs[0]) if runs else None
    if runs:
        return read_runs(runs)
    if mixtures and losses:
        return from_regmix_csv(mixtures, losses)
    raise RegmixError("--runs: no runs given; pass --runs runs.csv, or --mixtures M.csv --losses L.csv (RegMix's CSVs)")


def union_of_rounds(paths: list) -> pd.DataFrame:
    """The runs tables of several search rounds as one: the same domains in each (a table that differs is a
    one-line error naming it), a ``round`` column (1, 2, ... in the order given, unless the table has one), and
    run ids made unique by ``r<K>_`` where two rounds used the same id (each round's sweep numbers from n0001)."""
    frames = []
    first = None
    for k, path in enumerate(paths, start=1):
        df = read_runs(path)
        names = table_domains(df)
        if first is None:
            first = (path, names)
        elif sorted(names) != sorted(first[1]):
            diff = sorted(set(names) ^ set(first[1]))
            raise RegmixError(f"--runs {path}: its domains differ from {first[0]}'s (e.g. {diff[0]!r}); rounds of one "
                              "search share the domains")
        if "round" not in df.columns:
            df.insert(2 if "status" in df.columns else 1, "round", k)
        frames.append(df)
    seen: set[str] = set()
    for k, df in enumerate(frames, start=1):
        ids = df["run_id"].astype(str)
        clash = ids.isin(seen)
        if clash.any():
            df.loc[clash, "run_id"] = [f"r{k}_{r}" for r in ids[clash]]
        seen.update(df["run_id"].astype(str))
    return pd.concat(frames, ignore_index=True, sort=False)


def usable_runs(df: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, list[str]]:
    """Completed runs with a finite target; the others are returned by id so the caller can say so."""
    ok = df["status"].astype(str).isin(USABLE_STATUS) if "status" in df.columns else pd.Series(True, index=df.index)
    vals = target.values(df)
    ok &= np.isfinite(vals)
    dropped = df.loc[~ok, "run_id"].astype(str).tolist()
    return df.loc[ok].reset_index(drop=True), dropped


def fit_model(df: pd.DataFrame, target_expr: str, cfg: FitConfig, prior: dict[str, float] | None = None,
              listener: FitListener | None = None) -> FittedModel:
    """Parse the target, drop unusable runs, cross-validate, fit the predictor on every usable run.

    ``listener`` sees the fold fits and each CV row as it is ready (``regmix fit`` shows them)."""
    target = parse_target(target_expr, df, cfg.direction)
    df_all = df
    df, dropped = usable_runs(df, target)
    df, held = split_heldout(df, cfg.include_heldout)
    names = table_domains(df)
    X, y = weight_matrix(df), target.values(df)
    layout = phase_layout(df)
    phases: dict[str, Any] = {}
    by_name: dict[str, dict] = {}  # hyperparameters a predictor needs from the table: a schedule's phase lengths
    compare = list(cfg.compare)
    if layout is not None:
        lengths = phase_lengths(layout[1])
        phases = {"domains": layout[0], "starts": layout[1], "lengths": lengths}
        by_name = {n: {"lengths": lengths} for n in PHASE_CANDIDATES}
        compare += [PHASE_CONTROL] if PHASE_CONTROL != cfg.predictor and PHASE_CONTROL not in compare else []
    if len(y) < max(cfg.folds, 3):
        raise RegmixError(f"--runs: only {len(y)} usable run(s) with a finite {target.expr!r}; need at least {max(cfg.folds, 3)}")
    listener = listener or FitListener()
    listener.runs(len(y), cfg.folds, target.expr, dropped, missing_report(df_all, target))
    listener.direction(target)
    params = dict(cfg.params)
    params.setdefault("random_state", cfg.seed)
    for k, v in by_name.get(cfg.predictor, {}).items():
        params.setdefault(k, v)
    if layout is not None and cfg.predictor == "auto":
        from regmix_plugin.fit.auto import DEFAULT_CANDIDATES

        params.setdefault("candidates", (*DEFAULT_CANDIDATES, *PHASE_CANDIDATES))
        params["candidate_params"] = {**by_name, **(params.get("candidate_params") or {})}
    from dataclasses import replace

    cfg = replace(cfg, params=params, compare=tuple(compare))
    # Everything a predictor may use; each takes what its class declares in `needs` (fit/base.py): per-column
    # the target's columns, joint-law the runs' other per-domain validation losses as auxiliaries.
    aux_names, aux = auxiliary_losses(df, target)
    data = FitData(X, y, columns=np.column_stack([df[c].to_numpy(dtype=float) for c in target.columns]),
                   column_weights=np.array([w for w, _ in target.terms], dtype=float), auxiliary=aux,
                   auxiliary_names=tuple(aux_names))
    cls = predictor_class(cfg.predictor)
    if cls.selects_by_cv:  # it cross-validates its candidates itself, on the fit's folds
        params.setdefault("n_splits", cfg.folds)
        model = get_predictor(cfg.predictor, **params).fit(data, listener=listener)
        cv_rows, oof, reason = list(model.cv_), {model.chosen_: model.oof_}, model.reason_
        extra = [c for c in cfg.compare if c not in {r["predictor"] for r in cv_rows}]
        if extra:
            cv_rows += _cross_validate(extra, data, cfg, {}, oof, _fold_cache(X, y, cfg, listener), listener, by_name)
        selection = dict(model.selection_)
    else:
        names_cv = [cfg.predictor, *[c for c in cfg.compare if c != cfg.predictor]]
        cache = _fold_cache(X, y, cfg, listener)
        cv_rows = _cross_validate(names_cv, data, cfg, params, oof := {}, cache, listener, by_name)
        reason = f"{cfg.predictor} was requested (--predictor)"
        if cls.needs:
            model = get_predictor(cfg.predictor, **params).fit(data)
        else:  # a composite (the stack) reuses its members' out-of-fold predictions from the CV
            model = cache.refit((cfg.predictor, params), y, "y")
        selection = {"rule": "requested (--predictor)"}
    if prior is None:
        prior_source = "mean of the proxy runs' weights (no --prior/--base-mixture given)"
        prior = dict(zip(names, (X.mean(axis=0) / X.mean(axis=0).sum()).tolist()))
    else:
        prior_source = "given"
    if target.maximize:  # the truly best 10% are the highest: CV's one direction-dependent score
        all_oof = {**getattr(model, "oofs_", {}), **oof}
        for row in cv_rows:
            if row["predictor"] in all_oof:
                row["top10_overlap"] = round(top10_overlap(y, all_oof[row["predictor"]], maximize=True), 4)
    best = target.best_index(y)
    heldout = score_heldout(model, held, target, cfg.include_heldout, int(np.sum(is_heldout(df))))
    curve = _learning_curve(model, data, cfg, params, cv_rows, cls.selects_by_cv) if cfg.learning_curve else {}
    return FittedModel(
        heldout=heldout,
        learning_curve=curve,
        interactions=linear_interactions(df, names),
        predictor=model,
        domains=names,
        target=target,
        cv=cv_rows,
        reason=reason,
        n_runs=len(y),
        dropped=dropped,
        prior=prior,
        prior_source=prior_source,
        best_run={"run_id": str(df["run_id"].iloc[best]), "target": float(y[best]), "weights": dict(zip(names, X[best].tolist()))},
        y=y,
        oof=oof,
        X=X,
        auxiliary=aux_names if model.uses_auxiliary() else [],  # part of the model: recorded beside it
        selection=selection,
        phases=phases,
    )


def _learning_curve(model: Predictor, data: FitData, cfg: FitConfig, params: dict, cv_rows: list[dict],
                    by_auto: bool) -> dict[str, Any]:
    """The chosen predictor's CV at 50/75/100 % of the training runs and its projection to twice the runs."""
    from regmix_plugin.fit.auto import FIT_FAILURES, AutoPredictor
    from regmix_plugin.fit.learning_curve import learning_curve

    chosen = getattr(model, "chosen_", cfg.predictor)
    full = next((r.get("spearman") for r in cv_rows if r["predictor"] == chosen), None)
    n = len(data.y)
    if by_auto and isinstance(model, AutoPredictor):
        # Two random subsets per point (as many as auto's partitions when there are more): one is too noisy to
        # project from; each costs a CV of the chosen candidate on that many runs (DECISIONS 79).
        # A large swarm (auto.LARGE_SWARM runs or more) scores one subset per point: its CV is not that noisy,
        # and each subset is a CV of the chosen candidate on 1,000+ runs (DECISIONS 80).
        subsets = max(1 if model.is_large(n) else 2, model.n_repeats(n))

        def score(rows: np.ndarray, seed: int) -> float | None:
            return model.subset_score(data, rows, seed)
    else:
        subsets = 2
        spec = (cfg.predictor, params)
        on_data = bool(predictor_class(cfg.predictor).needs)

        def score(rows: np.ndarray, seed: int) -> float | None:
            sub = data.take(rows)
            cache = FoldCache(sub.X, kfold_indices(len(rows), min(cfg.folds, len(rows)), seed))
            try:
                oof = cache.predictions(spec, sub if on_data else sub.y, "data" if on_data else "y")
            except FIT_FAILURES:  # the failures auto skips a candidate for
                return None
            return scores(sub.y, oof)["spearman"] if np.all(np.isfinite(oof)) else None
    folds = min(cfg.folds, n)
    partitions = model.n_repeats(n) if by_auto and isinstance(model, AutoPredictor) else 1
    return {"folds": folds, **learning_curve(score, n, full, folds, subsets, cfg.seed, partitions, data.X.shape[1])}


def is_heldout(df: pd.DataFrame) -> np.ndarray:
    """Rows marked ``split = heldout`` (a table without a split column has none)."""
    if "split" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df["split"].astype(str).str.strip().str.lower().eq("heldout").to_numpy()


def split_heldout(df: pd.DataFrame, include: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows to fit on, the held-out rows kept out of the fit). With ``include`` every row is fitted on."""
    held = is_heldout(df)
    if include or not held.any():
        return df, df.iloc[0:0]
    if held.all():
        raise RegmixError(f"--runs: all {len(df)} usable runs are marked split = heldout; nothing is left to fit on "
                          "(pass --include-heldout to fit on them anyway)")
    return df.loc[~held].reset_index(drop=True), df.loc[held].reset_index(drop=True)


def score_heldout(model: Predictor, held: pd.DataFrame, target: Target, included: bool,
                  n_included: int) -> dict[str, Any]:
    """The fitted predictor on the held-out rows it never saw: Spearman rho x100 (3+ runs), MAE, and the
    predictions by run id; or a record that they were fitted on (``included``)."""
    if included:
        return {"runs": n_included, "included_in_fit": True} if n_included else {}
    if held.empty:
        return {}
    y = target.values(held)
    pred = model.predict(weight_matrix(held))  # same table, so the same domain columns in the same order
    rho = scores(y, pred)["spearman"] if len(y) >= 3 else None
    return {"runs": int(len(y)), "included_in_fit": False, "spearman": None if rho is None else round(rho, 4),
            "mae": round(float(np.mean(np.abs(pred - y))), 6),
            "predictions": {str(r): float(p) for r, p in zip(held["run_id"], pred)}}


def heldout_text(h: dict[str, Any]) -> str:
    if not h:
        return ""
    if h.get("included_in_fit"):
        return (f"held-out: the {h['runs']} run(s) marked split = heldout were fitted on (--include-heldout); "
                "nothing scored the fit on unseen runs")
    rho = f"Spearman {h['spearman']:.2f}, " if h.get("spearman") is not None else "(too few to rank), "
    return f"held-out: {h['runs']} run(s) never fitted on (split = heldout): {rho}mean absolute error {h['mae']:.4g}"


def _fold_cache(X: np.ndarray, y: np.ndarray, cfg: FitConfig, listener: FitListener) -> FoldCache:
    return FoldCache(X, kfold_indices(len(y), min(cfg.folds, len(y)), cfg.seed), step=listener.step)


def _cross_validate(names: list[str], data: FitData, cfg: FitConfig, params: dict, oof: dict[str, np.ndarray],
                    cache: FoldCache, listener: FitListener, by_name: dict[str, dict] | None = None) -> list[dict]:
    """CV rows of ``names`` on the cache's folds (the requested predictor with ``params`` and, when its class
    needs more than the target (per-column, joint-law), on the fit's data; the others with their defaults, on
    the target); fills ``oof``."""
    specs = {n: (n, params if n == cfg.predictor else {"random_state": cfg.seed, **(by_name or {}).get(n, {})})
             for n in names}
    listener.start(len(names) * len(cache.folds))
    rows = []
    try:
        for n in names:
            on_data = n == cfg.predictor and bool(predictor_class(n).needs)
            oof[n] = cache.predictions(specs[n], data if on_data else data.y, n if on_data else "y", n)
            rows.append(CVResult(n, scores(data.y, oof[n]), oof[n]).row())
            listener.row(rows[-1])
    finally:
        listener.close()
    return rows


def auxiliary_losses(df: pd.DataFrame, target: Target) -> tuple[list[str], np.ndarray]:
    """The runs' per-domain validation losses other than a one-column target: names, and values of shape
    (runs, columns). Columns that are not finite and positive on every run are left out (a loss that is
    missing cannot inform a fit)."""
    own = set(target.columns) if len(target.columns) == 1 else set()
    cols = [c for c in df.columns if c.startswith("valid/") and c.endswith("/loss") and c not in own]
    keep = [c for c in cols if np.all(np.isfinite(v := df[c].to_numpy(dtype=float))) and np.all(v > 0)]
    return keep, df[keep].to_numpy(dtype=float).reshape(len(df), len(keep))


def read_mixture_rows(path: str | os.PathLike, domain_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Rows of mixtures from a CSV (RegMix's mixture CSV, a runs table, or plain domain columns).

    Returns the row ids (``index``/``run_id`` column, else the row number) and the weights in model order.
    """
    path = Path(path)
    if not path.is_file():
        raise RegmixError(f"--mixtures {path}: file not found; check the path")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:
        raise RegmixError(f"--mixtures {path}: cannot read as CSV ({e.__class__.__name__}: {e})") from None
    id_col = next((c for c in ("index", "run_id") if c in df.columns), None)
    ids = df[id_col].astype(str).tolist() if id_col else [str(i) for i in range(len(df))]
    by_domain = {weight_domain(str(c)): c for c in df.columns}
    missing = [d for d in domain_names if d not in by_domain]
    if missing:
        raise RegmixError(
            f"--mixtures {path}: no column for domain {missing[0]!r}; the model was fit on {', '.join(domain_names)}"
        )
    X = df[[by_domain[d] for d in domain_names]].to_numpy(dtype=float)
    return ids, X


__all__ = ["FitConfig", "FittedModel", "fit_model", "load_runs_table", "read_mixture_rows", "scores"]


def linear_interactions(df: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    """Linear-law coefficients of every per-domain loss on every domain's weight (RegMix's heatmap).

    Row i, column j: how the validation loss of domain i moves when weight shifts to domain j from the
    average domain. Weights sum to 1, so only differences between coefficients are identified: rows are
    renormalised (released weights are rounded) and each row of coefficients is centred.
    """
    from regmix_plugin.fit.base import one_blas_thread

    rows = [c for c in df.columns if c.startswith("valid/") and c.endswith("/loss") and np.all(np.isfinite(df[c].to_numpy(float)))]
    X = weight_matrix(df)
    X = X / np.clip(X.sum(axis=1, keepdims=True), 1e-12, None)
    if not rows:
        return {"rows": rows, "domains": names, "coef": []}
    # The linear predictor's fit (OLS, minimum-norm: fit/linear.py) for every loss at once: one lstsq with
    # one right-hand side per loss instead of one solve each (BENCHMARKS.md, "Fit time").
    Y = df[rows].to_numpy(float)
    with one_blas_thread():
        W = np.linalg.lstsq(X - X.mean(axis=0), Y - Y.mean(axis=0), rcond=None)[0]
    return {"rows": rows, "domains": names, "coef": (W - W.mean(axis=0)).T.tolist()}
