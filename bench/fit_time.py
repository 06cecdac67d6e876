"""Wall time of `regmix fit --predictor auto` beside RegMix's LightGBM recipe, on the same runs, through the CLI.

Cases: RegMix's 512 released train runs (17 domains, Pile-CC target; ``regmix-Kx17``: the first K of
``default_rng(0).permutation(512)``), Olmix's DCLM swarm (``dclm-Kx24``, mean BPB over 110 tasks), and 512 synthetic runs over 64
domains (mixtures from the project's own RegMix-style sampler, a downstream-style target from an
effective-data law plus noise, and 64 per-domain losses beside it, as a real sweep's table has). For each
case `auto` and `lightgbm` alternate ``--repeats`` times in one process (so both see the same machine
load) and the medians and their ratio are reported. Goals (issue 15): auto <= 60 s at 512 x 17 and
<= 120 s at 512 x 64 on 2 cores; issue 27 (repeated CV): still <= 60 s at 512 x 17, and <= 20 s at 32-128 runs;
and at the large end ``synthetic-2000x128`` (any ``synthetic-NxD`` works) <= 120 s with memory under 1 GB.
Each timing is wall and CPU (user + sys of this process, children included) and the process's peak RSS so far.

    .venv/bin/python bench/fit_time.py --data ../shared/data/regmix-pile-1m --out bench_out/fit_time
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix_plugin.cli import main as regmix
from regmix_plugin.table import from_regmix_csv, write_runs


def synthetic_runs(n: int = 512, d: int = 64, seed: int = 0) -> pd.DataFrame:
    """``n`` runs over ``d`` domains: RegMix-style sampled mixtures, a downstream metric and per-domain losses."""
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.synthesize.sampler import SynthConfig, synthesize

    tokens = np.round(np.logspace(7, 4, d)).astype(int)  # a skewed corpus, like The Pile's
    base = Mixture.from_dict({"version": 1, "domains": [
        {"name": f"d{i:02d}", "weight": float(t), "prefixes": [f"d{i:02d}/train"], "tokens": int(t)}
        for i, t in enumerate(tokens)]})
    W = synthesize(SynthConfig(n=n, heldout=0, seed=seed), base).weights
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {f"weight/d{j:02d}": W[:, j] for j in range(d)}

    def law(s, g=0.6, c=2.0, k=1.5, a=0.4):
        return c + k * (1 + ((W + 1e-4) ** g - 1e-4**g) @ s) ** (-a)

    for j in range(d):  # each domain's own loss: mostly its own share, a little from related domains
        s = rng.lognormal(-2.0, 1.0, d)
        s[j] = 30.0
        cols[f"valid/d{j:02d}/loss"] = law(s, c=2.0 + 0.5 * rng.random()) * (1 + 0.002 * rng.normal(size=n))
    cols["downstream/bpb"] = law(rng.lognormal(0.0, 1.0, d)) * (1 + 0.003 * rng.normal(size=n))
    df = pd.DataFrame({"run_id": [f"r{i:04d}" for i in range(n)], "status": "completed", **cols})
    return df


def cpu_s() -> float:
    """User + sys CPU seconds of this process and its waited-for children."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_fit(runs: Path, target: str, predictor: str, out: Path, extra: tuple[str, ...] = ()) -> tuple[float, dict]:
    t0, c0 = time.perf_counter(), cpu_s()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = regmix(["fit", "--runs", str(runs), "--target", target, "--predictor", predictor, "--quiet",
                     *extra, "--out", str(out)])
    dt = time.perf_counter() - t0
    cpu = cpu_s() - c0
    if rc != 0:
        raise SystemExit(f"bench/fit_time.py: regmix fit --predictor {predictor} exited {rc}")
    doc = json.loads((out / "model.json").read_text())
    return dt, {"chosen": doc["chosen"], "cv": {r["predictor"]: r["spearman"] for r in doc["cv"]}, "cpu_s": cpu,
                "peak_rss_mb": peak_rss_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/regmix-pile-1m"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3, help="alternating auto/lightgbm pairs per case (medians)")
    ap.add_argument("--cases", default="regmix-512x17,synthetic-512x64")
    ap.add_argument("--auto-variants", default="auto",
                    help="comma-separated: auto (as `regmix fit` runs it) and/or auto-nolc (--no-learning-curve)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="fit_time_") as tmp:
        tmp = Path(tmp)
        for case in args.cases.split(","):
            runs = tmp / f"{case}.csv"
            if case.startswith("regmix-") and case.endswith("x17"):  # regmix-512x17, or a subset: regmix-64x17
                if not (data / "train_mixture_1m.csv").is_file():
                    print(f"bench/fit_time.py: no RegMix data at {data}; pass --data", file=sys.stderr)
                    return 2
                tr = from_regmix_csv(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
                k = int(case[len("regmix-"):-len("x17")])
                write_runs(tr.iloc[np.sort(np.random.default_rng(0).permutation(len(tr))[:k])], runs)
                target = "valid/pile_cc/loss"
            elif case.startswith("dclm-") and case.endswith("x24"):  # Olmix's DCLM swarm: the first k of rng(0)
                from regmix_plugin.collect.runs_table import from_olmix_csv

                d = data.parent / "olmix-dclm"
                df = from_olmix_csv(d / "dclm_ratios.csv", d / "dclm_metrics.csv", [])
                k = int(case[len("dclm-"):-len("x24")])
                write_runs(df.iloc[np.random.default_rng(0).permutation(len(df))[:k]], runs)
                target = "mean(*)"
            elif case.startswith("synthetic-") and "x" in case:  # synthetic-512x64, synthetic-2000x128, ...
                n, d = (int(v) for v in case[len("synthetic-"):].split("x"))
                write_runs(synthetic_runs(n, d), runs)
                target = "downstream/bpb"
            else:
                print(f"bench/fit_time.py: --cases: unknown case {case!r}", file=sys.stderr)
                return 2
            variants = args.auto_variants.split(",")
            times: dict[str, list[float]] = {v: [] for v in variants} | {"lightgbm": []}
            info = {}
            for r in range(args.repeats):
                for pred in (*variants, "lightgbm"):
                    extra = ("--no-learning-curve",) if pred == "auto-nolc" else ()
                    dt, info[pred] = time_fit(runs, target, pred.split("-nolc")[0], tmp / f"{case}-{pred}", extra)
                    times[pred].append(dt)
                    print(f"{case} {pred:8s} repeat {r + 1}: {dt:6.1f} s wall, {info[pred]['cpu_s']:6.1f} CPU-s, peak RSS "
                          f"{info[pred]['peak_rss_mb']:.0f} MB  chosen {info[pred]['chosen']}", flush=True)
            med = {p: statistics.median(v) for p, v in times.items()}
            results.append({"case": case, "target": target, "times": times, "median_s": med,
                            "ratio": {v: med[v] / med["lightgbm"] for v in variants}, "auto": info[variants[0]]})
    lines = ["| runs x domains | target | " + " | ".join(f"{v} median s" for v in variants)
             + " | lightgbm median s | " + " | ".join(f"{v} / lightgbm" for v in variants) + " | auto chose (CV rho) |",
             "|---|---|" + "---|" * (2 * len(variants) + 2)]
    for r in results:
        chosen = r["auto"]["chosen"]
        lines.append(f"| {r['case']} | {r['target']} | " + " | ".join(f"{r['median_s'][v]:.1f}" for v in variants)
                     + f" | {r['median_s']['lightgbm']:.1f} | " + " | ".join(f"{r['ratio'][v]:.1f}x" for v in variants)
                     + f" | {chosen} ({r['auto']['cv'][chosen]:.2f}) |")
    table = "\n".join(lines)
    print(table)
    (out / "fit_time.json").write_text(json.dumps({"repeats": args.repeats, "results": results}, indent=2))
    (out / "fit_time.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
