"""Repetition-matched proxies against plain proxies: how well each ranks mixtures like the target run does.

A demo-corpus variant in which two domains are small enough that the target run repeats them (the demo's own
domains are 0.7-2.9M tokens, more than any CPU target reads): ``dictionary`` and ``code`` as in the demo,
``quotes`` and ``computing`` capped at 60 kB and 30 kB of text. ``--mixtures`` mixtures are trained once at
target scale (the demo's target model, ``--target-steps`` steps of 8 x 128 tokens) and at proxy scale (the
demo's proxy model, 8 x 128 tokens per step, ``1/ratio`` of the target's tokens), each proxy twice: on the whole
domains, and with ``repetition: {target_tokens: T}`` (each small domain cut to ``1/ratio`` of its documents).
Every run is a `regmix sweep`, so the numbers come from the code a user runs.

Reported per proxy variant: Spearman rho against the target runs on the mean validation loss (what the demo
minimises) and per domain, and the regret: the target loss of the mixture the proxies rank first, minus the
best target loss among the mixtures.

    .venv/bin/python bench/repetition.py --out /tmp/rep [--mixtures 12] [--target-steps 640] [--ratios 8,4]
        [--proxy-seeds 1,2] [--target-seeds 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from regmix_plugin.demo.run import TARGET, with_target
from regmix_plugin.demo.sources import available_sources
from regmix_plugin.scale.laws import rank_invariance
from regmix_plugin.scale.match import match_tables
from regmix_plugin.io import atomic_write_json, atomic_write_text
from regmix_plugin.table import read_runs
from regmix_plugin.sweep.study import DEFAULT_COMMAND

REPO = Path(__file__).resolve().parents[1]
PROXY = REPO / "megatron_configs" / "demo-proxy-cpu.yaml"
TARGET_CONFIG = REPO / "megatron_configs" / "demo-target-cpu.yaml"
CAPS = {"dictionary": 3_000_000, "code": 2_500_000, "quotes": 60_000, "computing": 30_000}
BATCH, SEQ = 8, 128


def regmix(*args, cwd: Path) -> None:
    print("  $ regmix " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "regmix_plugin", *map(str, args)], cwd=cwd, check=True)


def build_corpus(out: Path) -> Path:
    natural = out / "corpus" / "natural.json"
    if natural.is_file():
        return natural
    sources = [dataclasses.replace(s, max_bytes=CAPS[s.domain]) for s in available_sources(list(CAPS))]
    if len(sources) != len(CAPS):
        sys.exit("bench/repetition.py: demo text packages missing; run scripts/install_system_packages.sh as root")
    args = ["corpus", "build", "--out", out / "corpus", "--doc-split", "paragraph", "--valid-fraction", 0.05]
    for s in sources:
        docs = [re.sub(r"\n\s*\n", "\n", d) for d in s.read()]  # one document per paragraph, as the demo does
        path = atomic_write_text(out / "text" / f"{s.domain}.txt", "\n\n".join(docs) + "\n")
        args += ["--domain", f"{s.domain}={path}"]
    regmix(*args, cwd=out)
    return natural


def sweep(out: Path, name: str, natural: Path, mixtures: Path, config: Path, sets: dict, extra: dict) -> Path:
    study = {"name": name, "base_mixture": str(natural), "proxy_config": str(config), "mixtures": str(mixtures),
             "out": str(out / "runs" / name),
             "command": DEFAULT_COMMAND + "".join(f" --set {k}={v}" for k, v in sets.items()),
             "env": {"OMP_NUM_THREADS": "1"}, "runs": {"retries": 1}, "local": {"max_concurrent": 2}, **extra}
    path = out / "studies" / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(study, sort_keys=False))
    t0 = time.perf_counter()
    regmix("sweep", path, "--no-progress", cwd=out)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = out / "tables" / f"{name}.csv"
    regmix("collect", out / "runs" / name, "--out", table, cwd=out)
    return table


def averaged(tables: list[Path]) -> pd.DataFrame:
    """One row per mixture: the mean over seeds of every loss (the tables list the same mixtures)."""
    frames = [with_target(read_runs(t)) for t in tables]
    frames = match_tables(frames, [str(t) for t in tables])
    out = frames[0].copy()
    losses = [c for c in out.columns if c.startswith("valid/") or c == TARGET]
    out[losses] = sum(f[losses].to_numpy() for f in frames) / len(frames)
    return out


def compare(proxy_csv: Path | pd.DataFrame, target_csv: Path | pd.DataFrame) -> dict:
    load = lambda t: t if isinstance(t, pd.DataFrame) else with_target(read_runs(t))  # noqa: E731
    proxy, target = load(proxy_csv), load(target_csv)
    metrics = [c for c in proxy.columns if c.startswith("valid/")] + [TARGET]
    check = rank_invariance(proxy, target, metrics=metrics)
    a, b = match_tables([proxy, target], ["proxy", "target"])
    pick = int(np.argmin(a[TARGET].to_numpy()))
    regret = float(b[TARGET].to_numpy()[pick] - b[TARGET].min())
    return {"rho": dict(zip(check.table["metric"], check.table["rho"])), "regret": regret,
            "picked": str(a["run_id"].iloc[pick]), "n": int(len(a))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mixtures", type=int, default=12)
    ap.add_argument("--target-steps", type=int, default=640)
    ap.add_argument("--ratios", default="8,4", help="target tokens / proxy tokens, comma-separated")
    ap.add_argument("--proxy-seeds", default="1,2")
    ap.add_argument("--target-seeds", default="1")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    natural = build_corpus(out)
    mixtures = out / "mixtures"
    if not (mixtures / "manifest.json").is_file():
        # Moderate mixtures around uniform (strengths 2-10): each domain mostly gets 5-50%, so the small ones
        # are repeated a few to ~20 times at target scale, and no mixture is won by leaving a domain out.
        regmix("synthesize", natural, "--out", mixtures, "--n", args.mixtures, "--heldout", 0, "--seed", 0,
               "--prior", "uniform", "--min-strength", 2, "--max-strength", 10, "--minimum", 0.01,
               "--no-max-usage", "--nonzero", "all", cwd=out)
    T = args.target_steps * BATCH * SEQ
    base = {"train.global_batch_size": BATCH, "train.micro_batch_size": BATCH}
    targets = {}
    for seed in map(int, args.target_seeds.split(",")):
        sets = {**base, "train.steps": args.target_steps, "optim.warmup_steps": args.target_steps // 10,
                "eval.every": args.target_steps, "train.seed": seed}
        targets[seed] = sweep(out, f"target-seed{seed}", natural, mixtures, TARGET_CONFIG, sets, {})
    results = {"target_tokens": T, "caps": CAPS, "mixtures": args.mixtures, "proxies": []}
    if len(targets) > 1:
        seeds = sorted(targets)
        results["target_vs_target"] = compare(targets[seeds[1]], targets[seeds[0]])
    tables: dict[tuple[int, bool], list[Path]] = {}
    for ratio in map(int, args.ratios.split(",")):
        steps = T // (ratio * BATCH * SEQ)
        for seed in map(int, args.proxy_seeds.split(",")):
            for matched in (False, True):
                name = f"proxy-1of{ratio}-seed{seed}-{'matched' if matched else 'plain'}"
                sets = {**base, "train.steps": steps, "optim.warmup_steps": max(1, steps // 10),
                        "eval.every": steps, "train.seed": seed}
                rep = {"repetition": {"target_tokens": T} if matched else {"match": False}}
                table = sweep(out, name, natural, mixtures, PROXY, sets, rep)
                tables.setdefault((ratio, matched), []).append(table)
                for tseed, ttable in targets.items():
                    row = {"ratio": ratio, "steps": steps, "seed": seed, "matched": matched, "target_seed": tseed,
                           **compare(table, ttable)}
                    results["proxies"].append(row)
                    print(f"  1/{ratio} seed {seed} {'matched' if matched else 'plain  '} vs target seed {tseed}: "
                          f"rho(mean) {row['rho'][TARGET]:.3f}, regret {row['regret']:.4f}", flush=True)
    # The same runs with the seed noise averaged out: each mixture's losses averaged over the proxy seeds,
    # against its losses averaged over the target seeds.
    target_mean = averaged(list(targets.values()))
    results["averaged"] = []
    for (ratio, matched), paths in tables.items():
        row = {"ratio": ratio, "matched": matched, "proxy_seeds": len(paths), "target_seeds": len(targets),
               **compare(averaged(paths), target_mean)}
        results["averaged"].append(row)
        print(f"  1/{ratio} {'matched' if matched else 'plain  '}, seed-averaged: rho(mean) {row['rho'][TARGET]:.3f}, "
              f"regret {row['regret']:.4f}", flush=True)
    spec = json.loads((out / "runs" / "proxy-1of{}-seed{}-matched".format(
        args.ratios.split(",")[0], args.proxy_seeds.split(",")[0]) / "sweep.json").read_text())
    results["repetition"] = spec["repetition"]
    atomic_write_json(out / "results.json", results)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
