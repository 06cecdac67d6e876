"""`make bench`: run every benchmark in bench/ one after another and gather their tables.

Each bench/<name>.py runs alone (`python bench/<name>.py --out DIR`), prints a markdown table and writes
JSON into DIR. This script runs them in sequence (never in parallel: they time things on a 2-core machine),
and writes bench_out/summary.md with every table and the wall time of each benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["data", "proxy", "sweep", "collect", "fit", "fit_time", "downstream", "optimize", "uncertainty", "synthesize",
         "phases", "scaling", "nested", "step_fit_speed", "megatron_eval", "megatron_step"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "regmix-pile-1m"),
                    help="RegMix's released proxy results (for the fit benchmark)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else [n for n in ORDER if (HERE / f"{n}.py").is_file()]
    sections, failed = [], []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--out", str(out / name)]
        if name in ("fit", "fit_time", "optimize", "uncertainty"):
            cmd += ["--data", args.data]
        if name == "step_fit_speed":  # times fits of the nested benchmark's real curves
            cmd += ["--curves", str(out / "nested" / "runs")]
        print(f"== bench/{name}.py: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        sys.stdout.write(proc.stdout)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed.append(name)
        sections.append(f"## {name} ({status}, {dt:.0f} s)\n\n`{' '.join(cmd[1:])}`\n\n{proc.stdout.strip()}\n")
    (out / "summary.md").write_text("# Benchmark run\n\n" + "\n".join(sections))
    print(f"\nwrote {out / 'summary.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
