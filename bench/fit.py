"""Benchmark the predictors on RegMix's released 1M-proxy results (fit on train runs, score on the 256 test runs).

Spearman rho (x100) between predicted and real validation loss of the test mixtures, for the Pile-CC target
and the mean over the 13 evaluated domains, with 64/128/256/512 training runs subsampled with a fixed seed.

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

PREDICTORS = ("linear", "lightgbm", "mixing-law", "log-law", "law-blend", "stack", "joint-law", "eff-law")  # add gp with --predictors (minutes at 512)
SIZES = (64, 128, 256, 512)
MAIN = "valid/pile_cc/loss"


def load(data: Path):
    tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    te = from_regmix_csv(data / "test_mixture_1m.csv", data / "test_pile_loss_1m.csv")
    return tr, te


def joint_law_rhos(tr, Xtr, splits, targets) -> dict[str, float]:
    """Spearman x100 per target column of one joint-law fit per split: MAIN first, every other loss auxiliary."""
    cols = [MAIN] + [c for c in tr.columns if c.startswith("valid/") and c != MAIN]
    Y = tr[cols].to_numpy(dtype=float)
    per_split = []
    for idx, Xs, ts in splits:
        P = get_predictor("joint-law", random_state=0).fit(Xtr[idx], Y[idx]).predict_columns(Xs)
        per_split.append({c: 100 * spearmanr(P[:, j], ts[c].to_numpy())[0] for j, c in enumerate(cols)})
    return {c: float(np.mean([r[c] for r in per_split])) for c in targets}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/regmix-pile-1m"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--predictors", default=",".join(PREDICTORS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--all-domains", action="store_true", help="also the mean over all 13 domains (slower)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training-run subsample")
    ap.add_argument("--train-cv", type=int, default=0, metavar="R",
                    help="score on the train runs left out of each of R random N-run subsets instead of the test runs")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "train_mixture_1m.csv").is_file():
        print(f"bench/fit.py: no RegMix data at {data}; pass --data", file=sys.stderr)
        return 2
    tr, te = load(data)
    Xtr, Xte = weight_matrix(tr), weight_matrix(te)
    targets = [c for c in tr.columns if c.startswith("valid/")] if args.all_domains else [MAIN]
    results = []
    for n in map(int, args.sizes.split(",")):
        if args.train_cv:  # (fit rows, scored X, scored table) per subset; seeds 1000+ differ from the test split's
            perms = [np.random.default_rng(1000 + r).permutation(len(tr)) for r in range(args.train_cv)]
            splits = [(p[:n], Xtr[p[n:]], tr.iloc[p[n:]]) for p in perms]
        else:
            splits = [(np.random.default_rng(args.seed).permutation(len(tr))[:n], Xte, te)]
        for name in args.predictors.split(","):
            rhos, t0 = {}, time.perf_counter()
            if name == "joint-law":
                rhos = joint_law_rhos(tr, Xtr, splits, targets)
            else:
                for col in targets:
                    y = tr[col].to_numpy()
                    rhos[col] = float(np.mean([100 * spearmanr(get_predictor(name, random_state=0).fit(Xtr[idx], y[idx]).predict(Xs),
                                                               ts[col].to_numpy())[0] for idx, Xs, ts in splits]))
            row = {"n_runs": n, "predictor": name, "pile_cc": round(rhos[MAIN], 2),
                   "mean_13": round(float(np.mean(list(rhos.values()))), 2) if args.all_domains else None,
                   "seconds": round(time.perf_counter() - t0, 1), "per_domain": rhos}
            results.append(row)
            print(f"n={n:4d} {name:11s} pile_cc {row['pile_cc']:6.2f}  mean13 {row['mean_13']}  ({row['seconds']}s)", flush=True)
    lines = ["| runs | predictor | Pile-CC rho | mean-13 rho | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_runs']} | {r['predictor']} | {r['pile_cc']:.2f} | {r['mean_13'] if r['mean_13'] is not None else '-'} | {r['seconds']} |" for r in results]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit.json").write_text(json.dumps({"data": str(data), "seed": args.seed, "train_cv": args.train_cv,
                                              "results": results}, indent=2))
    (out / "fit.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
