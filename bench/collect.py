"""`regmix collect` over many run directories: time and peak memory against a plain loop over the same files.

Writes synthetic sweeps of N completed runs, each directory as a sweep leaves it: ``mixture.json`` (a full
mixture with prefixes and provenance, written by ``Mixture.save``), ``status.json`` (written by the
runner's ``Status``) and ``metrics.jsonl`` (``--train-lines`` training lines and ``--evals`` evaluations of
``--domains`` domains, as the proxy trainer logs them). Then, for each N, in a fresh interpreter each:

- ``collect``: the library call of `regmix collect OUT --out runs.csv` (``collect`` + ``write_collected``);
- ``plain loop``: the same files read with ``json`` in a plain loop, one row per run (the weights, the last
  evaluation, the last training loss), into a DataFrame written to CSV: a floor, with none of collect's
  checks (weights records validated, sums, duplicates, steps common to all runs, warnings).

Reported: the median wall and CPU time of ``--repeats`` runs, the CPU time per run (flat across N: no
quadratic step; CPU time, because wall time on a shared machine follows the other users' load), and the
peak resident memory of each interpreter beyond what it held after its imports.

    .venv/bin/python bench/collect.py --out bench_out/collect [--runs 1000,2500,5000,10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOMAINS = ("web", "code", "books", "papers", "math", "wiki", "forums", "news")


def make_runs(root: Path, n: int, domains: int, train_lines: int, evals: int, seed: int = 0) -> Path:
    """``root/runs/<id>/`` for ``n`` completed runs of a sweep; returns ``root``."""
    from regmix_plugin.mixture import Domain, Mixture
    from regmix_plugin.sweep.state import Status

    rng = np.random.default_rng(seed)
    names = [DOMAINS[i % len(DOMAINS)] + ("" if i < len(DOMAINS) else str(i)) for i in range(domains)]
    steps = np.linspace(0, 1000, train_lines + 1)[1:].astype(int)
    eval_steps = set(np.linspace(0, 1000, evals + 1)[1:].astype(int).tolist())
    for i in range(n):
        run_id = f"n{i + 1:05d}"
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        w = rng.dirichlet(np.ones(domains))
        mix = Mixture(name=run_id, domains=[Domain(name=d, weight=float(x), prefixes=[f"../../corpus/{d}/train"],
                                                   tokens=1_000_000) for d, x in zip(names, w)],
                      provenance={"tool": "regmix synthesize", "split": "train", "seed": seed})
        mix.save(run_dir / "mixture.json")
        st = Status(run_id, "completed", [{"attempt": 1, "state": "completed", "host": "bench", "pid": 1,
                                            "started": "2026-12-07T00:00:00Z", "reason": None, "returncode": 0,
                                            "ended": "2026-12-07T00:01:00Z"}])
        st.save(run_dir)
        lines = []
        for step in steps:
            loss = 3.0 + 1.0 / step + float(w @ np.arange(domains)) * 0.01
            lines.append(json.dumps({"step": int(step), "tokens": int(step) * 4096, "train/loss": loss, "lr": 1e-3}))
            if int(step) in eval_steps:
                ev = {f"valid/{d}/loss": 3.5 - np.log1p(10 * x) + 1.0 / step for d, x in zip(names, w)}
                lines.append(json.dumps({"step": int(step), "tokens": int(step) * 4096, **ev}))
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return root


def plain_loop(root: Path, out: Path) -> int:
    """The same files read in a plain loop: weights, last evaluation, last training loss; no checks."""
    import pandas as pd

    rows = []
    for run_dir in sorted((root / "runs").iterdir()):
        mix = json.loads((run_dir / "mixture.json").read_text())
        status = json.loads((run_dir / "status.json").read_text())["state"]
        row = {"run_id": run_dir.name, "status": status}
        row.update({f"weight/{d['name']}": d["weight"] for d in mix["domains"]})
        last_eval, train = None, None
        with open(run_dir / "metrics.jsonl") as f:
            for line in f:
                r = json.loads(line)
                if "train/loss" in r:
                    train = r["train/loss"]
                if any(k.startswith("valid/") for k in r):
                    last_eval = r
        if last_eval is not None:
            row.update(last_eval)
        row["train/loss"] = train
        rows.append(row)
    pd.DataFrame(rows).to_csv(out, index=False)
    return len(rows)


def collect_runs(root: Path, out: Path) -> int:
    from regmix_plugin.collect.runs_table import collect, write_collected

    df, warnings = collect([root])
    write_collected(df, warnings, out)
    return len(df)


def _worker(mode: str, root: Path, out: Path) -> None:
    import pandas  # noqa: F401  (both modes build a DataFrame: its import is not the work measured)

    import regmix_plugin.collect.runs_table  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    n = (collect_runs if mode == "collect" else plain_loop)(root, out)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"rows": n, "seconds": dt, "cpu_seconds": cpu, "extra_rss_mib": (after.ru_maxrss - before.ru_maxrss) / 1024,
                      "peak_rss_mib": after.ru_maxrss / 1024}))


def measure(mode: str, root: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", mode, str(root), str(out)], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/collect")
    ap.add_argument("--runs", default="1000,2500,5000,10000", help="comma-separated numbers of run directories")
    ap.add_argument("--domains", type=int, default=8)
    ap.add_argument("--train-lines", type=int, default=20)
    ap.add_argument("--evals", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.runs.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="regmix-bench-collect-") as tmp:
        for n in sizes:
            root = make_runs(Path(tmp) / f"sweep{n}", n, args.domains, args.train_lines, args.evals)
            got: dict[str, list[dict]] = {"collect": [], "plain loop": []}
            for r in range(args.repeats):
                for mode in (("collect", "plain loop") if r % 2 == 0 else ("plain loop", "collect")):
                    got[mode].append(measure(mode, root, Path(tmp) / f"{mode.replace(' ', '_')}{n}.csv"))
            row = {"runs": n}
            for mode, ms in got.items():
                assert all(m["rows"] == n for m in ms), (mode, ms)
                row[mode] = {"seconds": statistics.median(m["seconds"] for m in ms),
                             "cpu_seconds": statistics.median(m["cpu_seconds"] for m in ms),
                             "extra_rss_mib": statistics.median(m["extra_rss_mib"] for m in ms),
                             "all_seconds": [m["seconds"] for m in ms], "all_cpu_seconds": [m["cpu_seconds"] for m in ms]}
            row["ratio"] = statistics.median(c["cpu_seconds"] / p["cpu_seconds"]
                                             for c, p in zip(got["collect"], got["plain loop"]))
            results.append(row)
            print(f"{n} runs: collect {row['collect']['cpu_seconds']:.2f} s CPU, plain loop "
                  f"{row['plain loop']['cpu_seconds']:.2f} s CPU", file=sys.stderr, flush=True)
    (out / "collect.json").write_text(json.dumps({"domains": args.domains, "train_lines": args.train_lines,
                                                  "evals": args.evals, "repeats": args.repeats,
                                                  "results": results}, indent=1))
    print(f"`regmix collect` over N completed run directories ({args.domains} domains, {args.train_lines} training "
          f"lines and {args.evals} evaluations each), median of {args.repeats} alternating repeats, each in a "
          "fresh interpreter:\n")
    print("| runs | collect: wall | CPU | CPU per run | extra memory | plain loop: wall | CPU | CPU per run | "
          "extra memory | collect / loop (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        c, p, n = row["collect"], row["plain loop"], row["runs"]
        print(f"| {n:,} | {c['seconds']:.2f} s | {c['cpu_seconds']:.2f} s | {1000 * c['cpu_seconds'] / n:.2f} ms | "
              f"{c['extra_rss_mib']:.0f} MiB | {p['seconds']:.2f} s | {p['cpu_seconds']:.2f} s | "
              f"{1000 * p['cpu_seconds'] / n:.2f} ms | {p['extra_rss_mib']:.0f} MiB | {row['ratio']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
