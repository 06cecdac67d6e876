"""Benchmark the predictors on RegMix's released 1M-proxy results (fit on train runs, score on the 256 test runs).

Spearman rho (x100) between predicted and real validation loss of the test mixtures, for the Pile-CC target
and the mean over the 13 evaluated domains, with 64/128/256/512 training runs subsampled with a fixed seed.
Every fit is scored twice, side by side: against the test mixtures' 1M-parameter runs and against the same
mixtures trained at 60M parameters (``test_*_60m.csv``): whether a ranking learned from 1M proxies holds
for a larger model. Nothing is fitted or chosen on the 60M runs. For scale, the table is followed by the
reference a 1M-trained predictor can hardly pass: the test mixtures' own 1M runs, ranked against their 60M
runs (a predictor that reproduced every 1M test run exactly would score that).

``auto`` is fitted as `regmix fit` fits it (``fit_model`` on the subset's runs table, so with its per-column
and auxiliary candidates); its rows say what it chose.

    .venv/bin/python bench/fit.py --data ../shared/data/regmix-pile-1m --out bench_out/fit

``--train-cv R`` never touches the test runs: it fits on N random train runs and scores on the other train
runs, averaged over R subsets. That is how predictors and their settings are chosen (docs/predictors.md).

``joint-law`` fits all loss columns at once (the target first, the other ``valid/*`` columns as auxiliaries,
as `regmix fit` gives it): one fit per split with Pile-CC first scores Pile-CC through ``predict`` and every
other domain through ``predict_columns`` (the joint objective treats the columns alike).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from regmix_plugin.fit.registry import get_predictor
from regmix_plugin.table import from_regmix_csv, weight_matrix

PREDICTORS = ("linear", "lightgbm", "mixing-law", "log-law", "law-blend", "stack", "joint-law", "eff-law", "auto")  # add gp with --predictors (minutes at 512)
SIZES = (64, 128, 256, 512)
MAIN = "valid/pile_cc/loss"


def load(data: Path):
    tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    te = from_regmix_csv(data / "test_mixture_1m.csv", data / "test_pile_loss_1m.csv")
    te60 = None
    if (data / "test_pile_loss_60m.csv").is_file():
        te60 = from_regmix_csv(data / "test_mixture_60m.csv", data / "test_pile_loss_60m.csv")
        te60 = te60.set_index("run_id").loc[te["run_id"]].reset_index()  # the 1M test runs' order
        assert np.allclose(weight_matrix(te60), weight_matrix(te)), "60M and 1M test mixtures differ"
    return tr, te, te60


def rho(pred: np.ndarray, actual) -> float:
    return 100 * spearmanr(pred, np.asarray(actual, dtype=float))[0]


def auto_predictions(tr, idx, col: str, Xs: np.ndarray, params: dict | None = None) -> tuple[np.ndarray, str]:
    """`regmix fit --predictor auto` on the subset (its per-column and auxiliary candidates included)."""
    from regmix_plugin.fit.model import FitConfig, fit_model

    # No learning curve: it does not change the fit, and it is measured in bench/learning_curve.py.
    fitted = fit_model(tr.iloc[idx].reset_index(drop=True), col, FitConfig(params=dict(params or {}), learning_curve=False))
    return fitted.predictor.predict(Xs), fitted.chosen


def joint_law_predictions(tr, Xtr, idx, Xs, targets) -> dict[str, np.ndarray]:
    """One joint-law fit per split, MAIN first and every other loss auxiliary; predictions per target column."""
    cols = [MAIN] + [c for c in tr.columns if c.startswith("valid/") and c != MAIN]
    P = get_predictor("joint-law", random_state=0).fit(Xtr[idx], tr[cols].to_numpy(dtype=float)[idx]).predict_columns(Xs)
    return {c: P[:, cols.index(c)] for c in targets}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/regmix-pile-1m"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--predictors", default=",".join(PREDICTORS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--all-domains", action="store_true", help="also the mean over all 13 domains (slower)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training-run subsample")
    ap.add_argument("--params", default="{}", help='JSON {predictor: {hyperparameter: value}}, e.g. \'{"eff-law": {"prior": 0}}\'')
    ap.add_argument("--train-cv", type=int, default=0, metavar="R",
                    help="score on the train runs left out of each of R random N-run subsets instead of the test runs")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "train_mixture_1m.csv").is_file():
        print(f"bench/fit.py: no RegMix data at {data}; pass --data", file=sys.stderr)
        return 2
    params = json.loads(args.params)
    tr, te, te60 = load(data)
    Xtr, Xte = weight_matrix(tr), weight_matrix(te)
    targets = [c for c in tr.columns if c.startswith("valid/")] if args.all_domains else [MAIN]
    results = []
    for n in map(int, args.sizes.split(",")):
        if args.train_cv:  # (fit rows, scored X, scored tables) per subset; seeds 1000+ differ from the test split's
            perms = [np.random.default_rng(1000 + r).permutation(len(tr)) for r in range(args.train_cv)]
            splits = [(p[:n], Xtr[p[n:]], {"1m": tr.iloc[p[n:]]}) for p in perms]
        else:
            scales = {"1m": te, **({"60m": te60} if te60 is not None else {})}
            splits = [(np.random.default_rng(args.seed).permutation(len(tr))[:n], Xte, scales)]
        for name in args.predictors.split(","):
            per_split, chosen, t0 = [], {}, time.perf_counter()
            for idx, Xs, tables in splits:
                if name == "joint-law":
                    preds = joint_law_predictions(tr, Xtr, idx, Xs, targets)
                elif name == "auto":
                    preds = {}
                    for col in targets:
                        preds[col], chosen[col] = auto_predictions(tr, idx, col, Xs, params.get("auto"))
                else:
                    preds = {col: get_predictor(name, **{"random_state": 0, **params.get(name, {})})
                             .fit(Xtr[idx], tr[col].to_numpy()[idx]).predict(Xs) for col in targets}
                per_split.append({sc: {c: rho(preds[c], t[c]) for c in targets} for sc, t in tables.items()})
            rhos = {sc: {c: float(np.mean([r[sc][c] for r in per_split])) for c in targets} for sc in per_split[0]}
            row = {"n_runs": n, "predictor": name, "seconds": round(time.perf_counter() - t0, 1)}
            for sc, r in rhos.items():
                sfx = "" if sc == "1m" else "_60m"
                row["pile_cc" + sfx] = round(r[MAIN], 2)
                row["mean_13" + sfx] = round(float(np.mean(list(r.values()))), 2) if args.all_domains else None
                row["per_domain" + sfx] = r
            if chosen:
                row["chosen"] = chosen
            results.append(row)
            at60 = f"  | 60M: pile_cc {row['pile_cc_60m']:6.2f}  mean13 {row['mean_13_60m']}" if "pile_cc_60m" in row else ""
            print(f"n={n:4d} {name:11s} pile_cc {row['pile_cc']:6.2f}  mean13 {row['mean_13']}{at60}  ({row['seconds']}s)"
                  + (f"  chose {chosen.get(MAIN)}" if chosen else ""), flush=True)
    scored60 = any("pile_cc_60m" in r for r in results)
    head = "| runs | predictor | Pile-CC rho | mean-13 rho |" + (" Pile-CC rho at 60M | mean-13 rho at 60M |" if scored60 else "")
    lines = [head + " seconds | auto chose (Pile-CC) |", "|---|---|---|---|" + ("---|---|" if scored60 else "") + "---|---|"]
    for r in results:
        cells = [r["n_runs"], r["predictor"], f"{r['pile_cc']:.2f}", r["mean_13"] if r["mean_13"] is not None else "-"]
        if scored60:
            cells += [f"{r['pile_cc_60m']:.2f}", r["mean_13_60m"] if r["mean_13_60m"] is not None else "-"]
        cells += [r["seconds"], r.get("chosen", {}).get(MAIN, "")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    reference = None
    if scored60 and not args.train_cv:
        # No prediction: the 1M measurements of the test mixtures themselves, scored against their 60M runs.
        reference = {c: rho(te[c], te60[c]) for c in targets}
        table += (f"\n\nReference, the test mixtures' own 1M runs ranked against their 60M runs: Pile-CC "
                  f"{reference[MAIN]:.2f}" + (f", mean-13 {np.mean(list(reference.values())):.2f}" if args.all_domains else ""))
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit.json").write_text(json.dumps({"data": str(data), "seed": args.seed, "train_cv": args.train_cv,
                                              "results": results, "reference_1m_runs_at_60m": reference}, indent=2))
    (out / "fit.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
