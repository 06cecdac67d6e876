"""Benchmark the conformal interval of `regmix optimize` (regmix.json's predicted_target_uncertainty.interval).

Fit exactly as `regmix fit` does (regmix_plugin.fit.model.fit_model: K-fold CV on the training runs, then a
full fit) on 64 and 512 of RegMix's train runs (subsampled with a fixed seed, as bench/fit.py does), build
the interval from the out-of-fold residuals (regmix_plugin.optimize.uncertainty), and count how many of the
256 test runs fall inside it. Targets: Pile-CC and the mean loss over the 13 evaluated domains.

The interval is calibrated over mixtures drawn like the proxy runs; the chosen mixture is the predictor's
own minimum, where errors lean optimistic. So coverage is also counted on the tenth of the test runs that
the model predicts lowest (26 runs), with the mean signed error there (actual - predicted; > 0 means the
model is optimistic where it matters).

    .venv/bin/python bench/uncertainty.py --data ../shared/data/regmix-pile-1m --out bench_out/uncertainty
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from regmix_plugin.fit.model import FitConfig, fit_model
from regmix_plugin.fit.targets import parse_target
from regmix_plugin.optimize.uncertainty import model_interval
from regmix_plugin.table import from_regmix_csv, weight_matrix

TARGETS = ("valid/pile_cc/loss", "mean(valid/*/loss)")
SIZES = (64, 512)
COVERAGES = (0.8, 0.9, 0.95)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/regmix-pile-1m"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--predictors", default="auto,log-law,lightgbm", help="comma-separated (auto: the CV choice)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seed", type=int, default=0, help="seed of the training-run subsample")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "train_mixture_1m.csv").is_file():
        print(f"bench/uncertainty.py: no RegMix data at {data}; pass --data", file=sys.stderr)
        return 2
    tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    te = from_regmix_csv(data / "test_mixture_1m.csv", data / "test_pile_loss_1m.csv")
    Xte = weight_matrix(te)
    perm = np.random.default_rng(args.seed).permutation(len(tr))
    rows = []
    for expr in TARGETS:
        yte = parse_target(expr, te).values(te)
        for n in map(int, args.sizes.split(",")):
            sub = tr.iloc[np.sort(perm[:n])].reset_index(drop=True)
            for name in args.predictors.split(","):
                t0 = time.perf_counter()
                model = fit_model(sub, expr, FitConfig(predictor=name, seed=0))
                pred = model.predictor.predict(Xte)
                best = np.argsort(pred, kind="stable")[: max(1, len(pred) // 10)]  # the predicted-best tenth
                for c in COVERAGES:
                    iv = model_interval(model, c)
                    lo, hi = iv.bounds(pred)
                    inside = (yte >= lo) & (yte <= hi)
                    rows.append({"target": expr, "n_runs": n, "predictor": name, "chosen": model.chosen,
                                 "coverage": c, "empirical": float(np.mean(inside)),
                                 "empirical_best_tenth": float(np.mean(inside[best])),
                                 "bias_best_tenth": float(np.mean(yte[best] - pred[best])),
                                 "half_width": iv.half_width, "test_rmse": float(np.sqrt(np.mean((pred - yte) ** 2))),
                                 "seconds": round(time.perf_counter() - t0, 1)})
                    r = rows[-1]
                    print(f"{expr:20s} n={n:4d} {name:9s} ({model.chosen:10s}) nominal {c:.2f} empirical "
                          f"{r['empirical']:.3f} (best tenth {r['empirical_best_tenth']:.3f}, bias {r['bias_best_tenth']:+.4f}) "
                          f"half-width {r['half_width']:.4f}", flush=True)
    lines = ["| target | train runs | predictor (chosen) | nominal | empirical on 256 test runs | on the predicted-best tenth "
             "| its bias (actual - predicted) | half-width | test RMSE |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['n_runs']} | {r['predictor']} ({r['chosen']}) | {r['coverage']:.0%} | "
              f"{r['empirical']:.1%} | {r['empirical_best_tenth']:.1%} | {r['bias_best_tenth']:+.4f} | "
              f"{r['half_width']:.4f} | {r['test_rmse']:.4f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "uncertainty.json").write_text(json.dumps({"data": str(data), "seed": args.seed, "results": rows}, indent=2))
    (out / "uncertainty.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
