"""Local sweep wall time: runs forked from one preloaded process (``local.preload``) vs a new interpreter
per run, side by side.

Each repeat sweeps the same N tiny proxies (megatron-core GPTModel, the demo's proxy shape at a few steps)
twice, once per mode, in alternating order, each into a fresh folder, with `regmix sweep` (the command a
user types) and ``local.max_concurrent: 2``. Reports the median wall time of each mode, the median of the
per-repeat ratios, and checks that both modes produced identical losses.

    .venv/bin/python bench/sweep.py --out bench_out/sweep [--runs 8] [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from regmix_plugin.collect.runs_table import collect
from regmix_plugin.sweep.study import DEFAULT_COMMAND

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import make_corpus  # noqa: E402  (bench/proxy.py: two stdlib text domains)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "megatron_configs" / "demo-proxy-cpu.yaml"


def sweep_once(root: Path, natural: Path, preload: bool, runs: int, steps: int) -> tuple[float, list]:
    root.mkdir(parents=True)
    study = root / "study.yaml"
    sets = f" --set train.steps={steps} --set eval.every={steps} --set optim.warmup_steps={max(1, steps // 10)}"
    study.write_text(yaml.safe_dump({
        "name": "bench", "base_mixture": str(natural), "proxy_config": str(CONFIG),
        "synthesize": {"n": runs, "heldout": 0, "seed": 0, "minimum": 0.01, "nonzero": "all"},
        "out": "out", "command": DEFAULT_COMMAND + sets, "env": {"OMP_NUM_THREADS": "1"},
        "local": {"max_concurrent": 2, "preload": preload},
    }))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "regmix_plugin", "sweep", str(study), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    df, _ = collect([root / "out"])
    losses = df[[c for c in df.columns if c.startswith("valid/")]].to_numpy().round(10).tolist()
    return dt, losses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/sweep")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {True: [], False: []}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        natural = make_corpus(tmp)
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            got = {}
            for mode in order:
                dt, got[mode] = sweep_once(tmp / f"r{r}-{mode}", natural, mode, args.runs, args.steps)
                times[mode].append(dt)
            same &= got[True] == got[False]
    ratios = [f / p for p, f in zip(times[True], times[False])]
    result = {"runs": args.runs, "steps": args.steps, "repeats": args.repeats,
              "preload_s": times[True], "fresh_s": times[False], "identical_losses": same,
              "median_ratio_fresh_over_preload": statistics.median(ratios)}
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    print(f"Local sweep of {args.runs} proxies ({args.steps} steps each, 2 at once), median of {args.repeats} "
          "alternating repeats:\n")
    print("| mode | wall time |\n|---|---|")
    print(f"| new interpreter per run | {statistics.median(times[False]):.1f} s |")
    print(f"| forked from a preloaded process (`local.preload`) | {statistics.median(times[True]):.1f} s |")
    print(f"\nMedian ratio {result['median_ratio_fresh_over_preload']:.2f}x; identical losses in both modes: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
