"""Step-law fitting speed: one model size's 100 runs x 22 evaluation sets, batched, against the previous
per-series solver.

    .venv/bin/python bench/step_fit_speed.py --curves bench_out/nested/runs --out bench_out/step_fit_speed

The curves are real: the eval curves of bench/nested.py's proxies (every run and evaluation set there),
tiled to 100 runs x 22 sets, each copy scaled by its own random factor and given its own 0.2 % noise so no
two series are equal. Timed, as medians of ``--repeats`` interleaved rounds, in one process:

- `extrapolate_steps` with the default settings (chosen by held-out tails: 8 candidate fits on 24 runs,
  then the fit of all 2,200 series);
- `extrapolate_steps` with the settings given (one batched fit);
- the previous implementation (scipy L-BFGS-B from 20 starts per series, read from git at ``--baseline``)
  on ``--baseline-runs`` runs, per series, and projected to 2,200 series.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def load_baseline(rev: str):
    """The previous fit/scaling.py from git, imported as a module of its own."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:regmix_plugin/fit/scaling.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "scaling_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("scaling_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def tiled_runs(curves_dir: Path, n_runs: int, n_sets: int, seed: int = 0):
    from regmix_plugin.collect.curves import read_run_curve
    from regmix_plugin.table import eval_columns

    real = []
    for run in sorted(p for p in curves_dir.glob("*/*") if (p / "outcome.json").is_file()):
        weights, curve = read_run_curve(run)
        for m in eval_columns(curve):
            real.append((weights, curve["step"].to_numpy(float), curve[m].to_numpy(float)))
    if not real:
        raise SystemExit(f"--curves {curves_dir}: no runs; run bench/nested.py first")
    rng = np.random.default_rng(seed)
    runs = {}
    for r in range(n_runs):
        cols = {}
        for k in range(n_sets):
            weights, steps, y = real[(r * n_sets + k) % len(real)]
            cols[f"valid/s{k:02d}/loss"] = y * rng.lognormal(0, 0.05) * rng.lognormal(0, 0.002, y.size)
        runs[f"r{r:03d}"] = ({"prose": 0.3 + 0.4 * rng.random(), "code": 0.7 - 0.4 * rng.random()},
                             pd.DataFrame({"step": steps, **cols}))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", required=True, help="bench/nested.py's runs folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--sets", type=int, default=22)
    ap.add_argument("--max-step", type=int, default=500, help="fit on evals up to this step (as the nested bench)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="d9c6dc3", help="git revision of the previous solver")
    ap.add_argument("--baseline-runs", type=int, default=2, help="runs timed with the previous solver")
    args = ap.parse_args()

    from regmix_plugin.scale.laws import StepFitConfig, extrapolate_steps
    from regmix_plugin.io import atomic_write_json

    runs = tiled_runs(Path(args.curves), args.runs, args.sets)
    n_series = args.runs * args.sets
    old = load_baseline(args.baseline)
    sub = dict(list(runs.items())[: args.baseline_runs])
    times = {"default": [], "given": [], "baseline_per_series": []}
    choice = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = extrapolate_steps(runs, 1500.0, StepFitConfig(max_step=args.max_step))
        times["default"].append(time.perf_counter() - t)
        choice = res.choice
        t = time.perf_counter()
        extrapolate_steps(runs, 1500.0, StepFitConfig(max_step=args.max_step, alpha=choice.alpha,
                                                      min_step=choice.min_step))
        times["given"].append(time.perf_counter() - t)
        t = time.perf_counter()
        old.extrapolate_steps(sub, 1500.0, old.StepFitConfig(max_step=args.max_step, min_step=choice.min_step,
                                                             shared_alpha=choice.alpha == "shared"))
        times["baseline_per_series"].append((time.perf_counter() - t) / (len(sub) * args.sets))
    med = {k: float(np.median(v)) for k, v in times.items()}
    projected = med["baseline_per_series"] * n_series
    print(f"Step laws of {args.runs} runs x {args.sets} evaluation sets ({n_series} series, evals up to step "
          f"{args.max_step}), median of {args.repeats}\n")
    print("| fit | seconds | per series (ms) |\n|---|---|---|")
    print(f"| default: settings chosen by held-out tails, then all series | {med['default']:.2f} | "
          f"{1000 * med['default'] / n_series:.2f} |")
    print(f"| settings given ({choice.alpha}, from step {choice.min_step}): one batched fit | {med['given']:.2f} | "
          f"{1000 * med['given'] / n_series:.2f} |")
    print(f"| previous solver (per series, {len(sub) * args.sets} timed) | {projected:.0f} (projected) | "
          f"{1000 * med['baseline_per_series']:.1f} |")
    print(f"\nratio per series, previous / batched with the same settings: {projected / med['given']:.0f}x; "
          f"default settings, all included: {med['default']:.1f} s (goal < 20 s)")
    atomic_write_json(Path(args.out) / "step_fit_speed.json", {
        "series": n_series, "times": times, "medians": med, "baseline_projected_s": projected,
        "choice": choice.to_dict(), "command": " ".join(sys.argv)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
