"""Fit and optimisation time of two-phase schedules: `regmix fit --predictor auto` on 512 runs x 2 phases x 17
domains beside `--predictor lightgbm` on the same runs, through the CLI, then `regmix optimize` of the schedule.

The runs are synthetic (no two-phase swarm of this size exists here): schedules from the project's own schedule
sampler (`synthesize --phases 0.8`, independent phases) over a skewed 17-domain corpus, a target that follows the
effective-exposure law with the late phase counting ``--importance`` times the first, plus noise, and the 17
per-domain losses beside it as a real sweep's table has them. ``auto`` and ``lightgbm`` alternate ``--repeats``
times in one process (both see the same load); medians and their ratio are printed as a markdown section. Goal
(issue 25): auto <= 60 s on this 2-core machine; optimisation in seconds.

    .venv/bin/python bench/phases.py --out bench_out/phases
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix_plugin.cli import main as regmix
from regmix_plugin.table import phase_start_column, phase_weight_column, write_runs


def schedule_runs(n: int = 512, d: int = 17, seed: int = 0, importance: float = 2.5, noise: float = 0.003) -> pd.DataFrame:
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.synthesize.phases import synthesize_schedules
    from regmix_plugin.synthesize.sampler import SynthConfig, plan

    tokens = np.round(np.logspace(7, 4, d)).astype(int)
    base = Mixture.from_dict({"version": 1, "domains": [
        {"name": f"d{i:02d}", "weight": float(t), "prefixes": [f"d{i:02d}/train"], "tokens": int(t)}
        for i, t in enumerate(tokens)]})
    cfg = SynthConfig(n=n, heldout=0, seed=seed, phases=[0.8])
    W = synthesize_schedules(cfg, plan(cfg, base)).weights  # (n, 2, d)
    rng = np.random.default_rng(seed)
    E = 0.8 * W[:, 0] + importance * 0.2 * W[:, 1]
    df = pd.DataFrame({"run_id": [f"n{i:04d}" for i in range(n)], "status": "completed"})
    cols = {}
    for k in range(2):
        for j in range(d):
            cols[phase_weight_column(k, f"d{j:02d}")] = W[:, k, j]
    cols[phase_start_column(1)] = np.full(n, 0.8)
    for j in range(d):  # each domain's loss: mostly its own exposure, a little from the others
        s = rng.lognormal(-2.0, 1.0, d)
        s[j] = 30.0
        y = 2.0 + 1.5 * (1 + ((E + 1e-4) ** 0.6 - 1e-4**0.6) @ s) ** -0.4
        cols[f"valid/d{j:02d}/loss"] = y + noise * rng.normal(size=n)
    return pd.concat([df, pd.DataFrame(cols)], axis=1)


def run(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = regmix(argv)
    if rc != 0:
        raise SystemExit(f"regmix {' '.join(argv)} exited {rc}")
    return time.perf_counter() - t0, buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/phases")
    ap.add_argument("--runs", type=int, default=512)
    ap.add_argument("--domains", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--importance", type=float, default=2.5)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.csv"
    write_runs(schedule_runs(args.runs, args.domains, importance=args.importance), runs)
    target = "valid/d00/loss"
    times: dict[str, list[float]] = {"auto": [], "lightgbm": []}
    for _ in range(args.repeats):
        for p in times:
            dt, _ = run(["fit", "--runs", str(runs), "--target", target, "--predictor", p, "--quiet",
                         "--out", str(out / f"model-{p}")])
            times[p].append(dt)
    doc = json.loads((out / "model-auto" / "model.json").read_text())
    rho = {r["predictor"]: r["spearman"] for r in doc["cv"]}
    opt_times = []
    for _ in range(args.repeats):
        dt, text = run(["optimize", "--model", str(out / "model-auto"), "--out", str(out / "opt" / "schedule.yaml")])
        opt_times.append(dt)
    med = {p: statistics.median(v) for p, v in times.items()}
    print(f"## Schedules: fit and optimise time, {args.runs} runs x 2 phases x {args.domains} domains\n")
    print(f"`{sys.executable} bench/phases.py --out {args.out}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{args.repeats} alternating repeats, medians)\n")
    print("| predictor | median s | runs of each |")
    print("|---|---|---|")
    for p, v in times.items():
        print(f"| {p} | {med[p]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    print(f"\n- auto / lightgbm: {med['auto'] / med['lightgbm']:.1f}x; auto chose {doc['chosen']} "
          f"(CV rho {rho[doc['chosen']]:.2f}); phase-law {rho.get('phase-law', float('nan')):.2f}, the control "
          f"averaged-exposure {rho.get('averaged-exposure', float('nan')):.2f}, eff-law over the concatenation "
          f"{rho.get('eff-law', float('nan')):.2f}")
    print(f"- `regmix optimize` of the schedule: median {statistics.median(opt_times):.2f} s "
          f"({', '.join(f'{x:.2f}' for x in opt_times)}); {text.splitlines()[1] if len(text.splitlines()) > 1 else ''}")
    print(f"- goal auto <= 60 s: {'met' if med['auto'] <= 60 else 'NOT met'} ({med['auto']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
