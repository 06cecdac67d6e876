"""How well does `regmix fit`'s learning curve project the CV of twice the runs? (issue 27)

From the first k runs of ``default_rng(seed).permutation(N)``, `regmix fit --predictor auto` (``fit_model``)
reports its chosen predictor's CV at 50/75/100 % of the k runs and projects the CV at 2k. Then the first 2k
runs of the same permutation are fitted the same way and their reported CV (the chosen predictor's, the
100 % point) is what the projection is compared with. "No change" (projecting the CV at k) is the baseline.
Nothing here looks at runs outside the 2k fitted ones.

    nice .venv/bin/python bench/learning_curve.py --dataset dclm --ks 32,64 --seeds 0,1,2 --out bench_out/lc_dclm.json
    nice .venv/bin/python bench/learning_curve.py --dataset regmix --ks 32,64,128 --seeds 0,1,2 --out bench_out/lc_regmix.json

DCLM has 127 runs, so its "2k" for k = 64 is all 127.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selection_dev import dataset  # noqa: E402


def fit(df, target: str):
    from regmix_plugin.fit.model import FitConfig, fit_model

    return fit_model(df.reset_index(drop=True), target, FitConfig())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("dclm", "regmix"), default="dclm")
    ap.add_argument("--ks", default="32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    df, target = dataset(args.dataset)
    rows = []
    for k in map(int, args.ks.split(",")):
        for seed in map(int, args.seeds.split(",")):
            perm = np.random.default_rng(seed).permutation(len(df))
            t0 = time.perf_counter()
            small = fit(df.iloc[perm[:k]], target)
            big = fit(df.iloc[perm[: 2 * k]], target)
            lc = small.learning_curve
            row = {"k": k, "seed": seed, "2k": min(2 * k, len(df)), "chosen_k": small.chosen, "chosen_2k": big.chosen,
                   "cv_k": small.cv_score(), "projected_2k": lc.get("projected_spearman"), "cv_2k": big.cv_score(),
                   "points": lc.get("points"), "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"| data | k -> 2k | seeds | CV at k | projected at 2k | CV at 2k | projection error (mean abs) | no-change error (mean abs) |")
    print("|---|---|---|---|---|---|---|---|")
    for k in sorted({r["k"] for r in rows}):
        rs = [r for r in rows if r["k"] == k and r["projected_2k"] is not None]
        if not rs:
            continue
        cvk, pr, cv2 = (np.array([r[c] for r in rs]) for c in ("cv_k", "projected_2k", "cv_2k"))
        print(f"| {args.dataset} | {k} -> {rs[0]['2k']} | {args.seeds} | {cvk.mean():.1f} | {pr.mean():.1f} | {cv2.mean():.1f} "
              f"| {np.mean(np.abs(pr - cv2)):.1f} | {np.mean(np.abs(cvk - cv2)):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
