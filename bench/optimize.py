"""Benchmark mixture search: exact (closed form, SLSQP or projected gradient) vs RegMix's 100k-sample top-128 average, and scaling.

1. Side by side on RegMix's Pile data (log-law fit on the 512 train runs, Pile-CC target): predicted loss
   and wall time of RegMix's search (100k Dirichlet samples around the prior, average of the top 128) and
   of exact search. Goal: exact reaches a predicted loss at least as good, >= 10x faster.
2. Scaling on synthetic data from a known mixing law: fit (mixing law, two starts) + exact search for 17, 100 and 1000
   domains (4096 runs at 1000). Goals: 100 domains < 10 s, 1000 domains x 4096 runs < 120 s on 2 cores.

    .venv/bin/python bench/optimize.py --out bench_out/optimize
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from regmix_plugin.fit.registry import get_predictor
from regmix_plugin.optimize.search import SearchConfig, search
from regmix_plugin.table import from_regmix_csv, weight_matrix


def side_by_side(data: Path, repeats: int, predictor: str = "log-law") -> dict:
    tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    X, y = weight_matrix(tr), tr["valid/pile_cc/loss"].to_numpy()
    names = [f"d{i}" for i in range(X.shape[1])]
    model = get_predictor(predictor).fit(X, y)
    prior = X.mean(axis=0) / X.mean(axis=0).sum()
    lo, hi = np.zeros(len(names)), np.ones(len(names))
    times: dict[str, list[float]] = {"sample": [], "exact": []}
    res: dict = {}
    for r in range(repeats):  # alternate the two so that machine noise hits both alike
        for mode in ("sample", "exact"):
            t0 = time.perf_counter()
            res[mode] = search(model, names, prior, lo, hi, SearchConfig(mode=mode, n_samples=100_000, top_k=128, seed=r))
            times[mode].append(time.perf_counter() - t0)
    out = {m: {"predicted": res[m].predicted, "median_seconds": float(np.median(times[m])), "evaluations": res[m].evaluations,
               "search": res[m].label} for m in times}
    out["speedup"] = out["sample"]["median_seconds"] / out["exact"]["median_seconds"]
    out["exact_at_least_as_good"] = out["exact"]["predicted"] <= out["sample"]["predicted"]
    return out


def closed_form_check(data: Path, columns=("pile_cc", "github", "arxiv", "freelaw")) -> list[dict]:
    """eff-law's closed-form optimum against 3-start SLSQP on the same fit, for several targets and bound sets."""
    tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    X = weight_matrix(tr)
    D, names = X.shape[1], [f"d{i}" for i in range(X.shape[1])]
    prior = X.mean(axis=0) / X.mean(axis=0).sum()
    rows = []
    for col in columns:
        model = get_predictor("eff-law").fit(X, tr[f"valid/{col}/loss"].to_numpy())
        rng = np.random.default_rng(0)
        for case in ("simplex", "random caps", "caps and minimums", "plus one fixed weight"):
            lo, hi = np.zeros(D), np.ones(D)
            if case != "simplex":
                hi = rng.uniform(0.02, 0.5, D)
                hi[0] = max(hi[0], 0.3)  # the caps must leave room for a mixture (sum >= 1)
            if case in ("caps and minimums", "plus one fixed weight"):
                lo = rng.uniform(0.0, 0.02, D)
            if case == "plus one fixed weight":
                lo[3] = hi[3] = 0.05
            closed = search(model, names, prior, lo, hi, SearchConfig(mode="exact"))
            solve = model.minimize_on_simplex
            model.minimize_on_simplex = lambda lo, hi: None  # hide the closed form: SLSQP searches
            slsqp = search(model, names, prior, lo, hi, SearchConfig(mode="exact", n_starts=3))
            model.minimize_on_simplex = solve
            rows.append({"target": col, "bounds": case, "method": closed.method, "closed_form": closed.predicted,
                         "slsqp": slsqp.predicted, "max_weight_difference": float(np.abs(closed.weights - slsqp.weights).max())})
            r = rows[-1]
            print(f"| {col} | {case} | {r['closed_form']:.6f} | {r['slsqp']:.6f} | {r['max_weight_difference']:.1e} |", flush=True)
    return rows


def synthetic(D: int, n: int, seed: int = 0):
    """Runs from the law 2 + exp(t . r) plus noise; also returns t, so the chosen mixture's true loss is known."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, 2.0, D)
    X = rng.dirichlet(np.full(D, 0.3), n)
    y = 2.0 + np.exp(X @ t) + 0.002 * rng.normal(size=n)
    return X, y, t


def scaling(cases, repeats: int = 1) -> list[dict]:
    rows = []
    for D, n in cases:
        X, y, t = synthetic(D, n)
        names = [f"d{i}" for i in range(D)]
        for rep in range(repeats):
            t0 = time.perf_counter()
            model = get_predictor("mixing-law", n_starts=2).fit(X, y)  # one start (t = 0) underfits at 1000 domains
            t_fit = time.perf_counter() - t0
            res = search(model, names, np.full(D, 1.0 / D), np.zeros(D), np.ones(D),
                         SearchConfig(mode="exact", n_samples=100_000, n_starts=4))
            t_all = time.perf_counter() - t0
            true = float(2.0 + np.exp(res.weights @ t))  # what the chosen mixture really scores under the law
            rows.append({"domains": D, "runs": n, "repeat": rep, "fit_seconds": round(t_fit, 2),
                         "total_seconds": round(t_all, 2), "predicted": res.predicted, "true": true,
                         "true_optimum": float(2.0 + np.exp(t.min())), "best_run": float(y.min())})
            print(f"D={D:5d} runs={n:5d} fit {t_fit:7.2f}s  fit+optimize {t_all:7.2f}s  predicted {res.predicted:.5f} "
                  f"true {true:.5f} (true optimum {2.0 + np.exp(t.min()):.5f}, best run {y.min():.4f})", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/regmix-pile-1m"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--predictor", default="log-law", help="smooth predictor fit for the side-by-side search")
    ap.add_argument("--skip-1000", action="store_true", help="leave out the 1000-domain case (about a minute)")
    ap.add_argument("--cases", default="17x512,100x1024,1000x4096", help="scaling cases, DOMAINSxRUNS, comma-separated")
    ap.add_argument("--only-scaling", action="store_true", help="leave out the side-by-side comparison")
    ap.add_argument("--scaling-repeats", type=int, default=1, help="time each scaling case this many times")
    ap.add_argument("--closed-form-check", action="store_true",
                    help="also compare eff-law's closed-form optimum with 3-start SLSQP (4 targets x 4 bound sets)")
    args = ap.parse_args(argv)
    report: dict = {"cpu_count": os.cpu_count()}
    data = Path(args.data)
    if args.only_scaling:
        pass
    elif (data / "train_mixture_1m.csv").is_file():
        sbs = side_by_side(data, args.repeats, args.predictor)
        report["side_by_side"] = sbs
        print("| search | predicted Pile-CC loss | median seconds | predictions |\n|---|---|---|---|")
        for mode, label in (("sample", "RegMix 100k top-128"), ("exact", sbs["exact"]["search"])):
            r = sbs[mode]
            print(f"| {label} | {r['predicted']:.5f} | {r['median_seconds']:.3f} | {r['evaluations']} |")
        print(f"speedup {sbs['speedup']:.1f}x; exact at least as good: {sbs['exact_at_least_as_good']}\n")
    else:
        print(f"no RegMix data at {data}; skipping the side-by-side comparison", file=sys.stderr)
    if args.closed_form_check:
        print("| target | bounds | closed form | SLSQP, 3 starts | max weight difference |\n|---|---|---|---|---|")
        report["closed_form_check"] = closed_form_check(data)
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    cases = [c for c in cases if not (args.skip_1000 and c[0] >= 1000)]
    rows = scaling(cases, args.scaling_repeats)
    report["scaling"] = rows
    print("| domains | runs | fit s | fit+optimize s | predicted loss | true loss (optimum) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['domains']} | {r['runs']} | {r['fit_seconds']} | {r['total_seconds']} | {r['predicted']:.5f} | "
              f"{r['true']:.5f} ({r['true_optimum']:.5f}) |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimize.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
