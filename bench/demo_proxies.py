"""How many proxy runs does the demo's predictor need? Refit a finished `regmix demo` folder on its first n runs.

    PYTHONPATH=. .venv/bin/python bench/demo_proxies.py --demo demo_out --n 16,24,32,40,48

`regmix synthesize` keeps mixtures from one deterministic stream in order, so `--proxies n` trains exactly
n0001..n<n> of a larger sweep with the same seed: refitting on the first n runs of a 48-run demo is what a
demo with n proxies fits (its held-out set would be the next 8 of the stream; here every n is scored on the
same 8 held-out mixtures h0001..h0008, so the numbers compare). For each n: `regmix fit --predictor auto`
(its choice, CV Spearman, CPU time), the held-out Spearman rho and MAE of its predictions, and the mixture
`regmix optimize` chooses with it. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def _regmix(*args) -> None:
    subprocess.run([sys.executable, "-m", "regmix_plugin", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="a finished `regmix demo` folder")
    ap.add_argument("--n", default="16,24,32,40,48", help="comma-separated numbers of fit runs")
    ap.add_argument("--out", help="work folder (default: DEMO/bench_proxies)")
    args = ap.parse_args(argv)
    from regmix_plugin.demo.run import TARGETS, with_target
    from regmix_plugin.table import read_runs, write_runs

    demo = Path(args.demo).resolve()
    out = Path(args.out or demo / "bench_proxies").resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = "eval" if any(c.startswith("valid/eval_") for c in pd.read_csv(demo / "runs.csv", nrows=1)) else "train-mean"
    column, expr = TARGETS[target]
    runs = read_runs(demo / "runs.csv").sort_values("run_id").reset_index(drop=True)
    held = read_runs(demo / "runs_heldout.csv")
    weights = ["run_id"] + [c for c in held.columns if c.startswith("weight/")]
    held[weights].to_csv(out / "heldout_mixtures.csv", index=False)
    rows = []
    for n in [int(x) for x in args.n.split(",")]:
        sub = with_target(runs.head(n).copy(), target)
        write_runs(sub, out / f"runs{n}.csv")
        t0, c0 = time.perf_counter(), _child_cpu()
        _regmix("fit", "--runs", out / f"runs{n}.csv", "--target", expr, "--predictor", "auto", "--out", out / f"model{n}")
        wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
        _regmix("predict", "--model", out / f"model{n}", "--mixtures", out / "heldout_mixtures.csv",
                "--out", out / f"heldout{n}.csv")
        _regmix("optimize", "--model", out / f"model{n}", "--base-mixture", demo / "corpus" / "natural.json",
                "--out", out / f"regmix{n}.json")
        model = json.loads((out / f"model{n}" / "model.json").read_text())
        pred = pd.read_csv(out / f"heldout{n}.csv")["prediction"].to_numpy()
        actual = held[column].to_numpy()
        cv = {r["predictor"]: r for r in model.get("cv", [])}
        chosen = model.get("chosen", model.get("predictor"))
        mix = json.loads((out / f"regmix{n}.json").read_text())
        rows.append({"fit runs": n, "auto chose": chosen,
                     "CV Spearman": cv.get(chosen, {}).get("spearman", np.nan),
                     "held-out rho": float(spearmanr(pred, actual).statistic),
                     "held-out MAE": float(np.mean(np.abs(pred - actual))),
                     "fit wall s": round(wall, 1), "fit CPU s": round(cpu, 1),
                     "chosen mixture": " ".join(f"{d['name']} {d['weight']:.2f}" for d in mix["domains"])})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in table.itertuples(index=False)]
    (out / "proxies.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
