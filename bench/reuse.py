"""Mixture reuse against full recomputation on the demo corpus: proxy compute and the target loss of each choice.

1. **old**: a full study over the demo corpus without ``--drop`` (6 domains): ``--n`` proxies, ``regmix fit``
   (``auto``, target the mean validation loss), ``regmix optimize`` -> the old regmix.json.
2. **reuse**: ``regmix reuse plan`` adds the dropped domain back (``--base`` the full corpus), a reduced study of
   ``--reuse-n`` proxies over {frozen, dropped}, ``regmix reuse runs``, fit, optimize, ``regmix reuse expand``.
3. **full**: a full study over all 7 domains with ``--n`` proxies, fit, optimize.
4. The two chosen mixtures (and natural, for reference) trained with the demo's target model, one run per seed.

The proxies are the demo's (``megatron_configs/demo-proxy-cpu.yaml``); every step is the `regmix` command a user
runs, and a rerun reuses finished runs (fits and searches are redone).

    .venv/bin/python bench/reuse.py --out /tmp/reuse [--corpus demo_out/corpus/natural.json] [--drop pydocs]
        [--n 32] [--reuse-n 8] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from regmix_plugin.demo.run import TARGET, with_target
from regmix_plugin.io import atomic_write_json, atomic_write_text
from regmix_plugin.mixture import Mixture
from regmix_plugin.sweep.study import DEFAULT_COMMAND
from regmix_plugin.table import read_runs

REPO = Path(__file__).resolve().parents[1]
PROXY = REPO / "megatron_configs" / "demo-proxy-cpu.yaml"
TARGET_CONFIG = REPO / "megatron_configs" / "demo-target-cpu.yaml"
FIT_TARGET = "mean(valid/*/loss)"


def regmix(*args, cwd: Path) -> None:
    print("  $ regmix " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "regmix_plugin", *map(str, args)], cwd=cwd, check=True)


def study(out: Path, name: str, base: Path, config: Path, body: dict, extra_command: str = "") -> Path:
    doc = {"name": name, "base_mixture": str(base), "proxy_config": str(config), **body,
           "command": DEFAULT_COMMAND + extra_command, "env": {"OMP_NUM_THREADS": "1"}, "runs": {"retries": 1},
           "backend": "local", "local": {"max_concurrent": 2}}
    path = out / f"study-{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_and_fit(out: Path, name: str, sweep_dir: Path, base: Path) -> Path:
    regmix("collect", sweep_dir, "--out", out / f"{name}_runs.csv", cwd=out)
    regmix("fit", "--runs", out / f"{name}_runs.csv", "--target", FIT_TARGET, "--out", out / f"{name}_model", cwd=out)
    regmix("optimize", "--model", out / f"{name}_model", "--base-mixture", base, "--out", out / f"{name}_regmix.json",
           cwd=out)
    return out / f"{name}_regmix.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, help="the demo corpus's natural.json (default: build it under OUT/demo)")
    ap.add_argument("--drop", default="pydocs", help="the domain the old study lacks")
    ap.add_argument("--n", type=int, default=32, help="proxies of the old and of the full study")
    ap.add_argument("--reuse-n", type=int, default=8, help="proxies of the reduced study")
    ap.add_argument("--seeds", default="1,2", help="target-model seeds")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.corpus is None:
        from regmix_plugin.demo.config import DemoConfig
        from regmix_plugin.demo.run import Demo

        demo = Demo(DemoConfig(out=out / "demo"))
        demo.out.mkdir(parents=True, exist_ok=True)
        demo.stage("text", "Extract real text", demo.extract_text)
        demo.stage("corpus", "Build the corpus", demo.build_corpus)
        args.corpus = demo.path("corpus", "natural.json")
    natural_path = args.corpus.resolve()
    natural = Mixture.load(natural_path)
    old_base = natural_path.parent / f"natural-no-{args.drop}.json"
    Mixture.from_weights({d.name: d.weight for d in natural.domains if d.name != args.drop}, template=natural,
                         name=f"natural-no-{args.drop}").save(old_base)
    synth = {"n": args.n, "heldout": 0, "seed": 0}

    # 1. the old study, without the dropped domain
    old_study = study(out, "old6", old_base, PROXY, {"synthesize": synth, "out": str(out / "old6")})
    regmix("sweep", old_study, "--no-progress", cwd=out)
    old = sweep_and_fit(out, "old6", out / "old6", old_base)

    # 2. reuse: add the domain back, search {frozen, dropped}
    regmix("reuse", "plan", old, "--base", natural_path, "--old-runs", out / "old6_runs.csv", "--study", old_study,
           "--n", args.reuse_n, "--seed", 0, "--out", out / "reuse7", cwd=out)
    regmix("sweep", out / "reuse7" / "study.yaml", "--no-progress", cwd=out)
    regmix("collect", out / "reuse7" / "sweep", "--out", out / "reuse7_new_runs.csv", cwd=out)
    regmix("reuse", "runs", out / "reuse7", "--runs", out / "reuse7_new_runs.csv", "--out", out / "reuse7_runs.csv",
           cwd=out)
    regmix("fit", "--runs", out / "reuse7_runs.csv", "--target", FIT_TARGET, "--out", out / "reuse7_model", cwd=out)
    regmix("optimize", "--model", out / "reuse7_model", "--base-mixture", out / "reuse7" / "base.json",
           "--out", out / "reuse7_reduced.json", cwd=out)
    regmix("reuse", "expand", out / "reuse7", out / "reuse7_reduced.json", "--name", "regmix-reuse",
           "--out", out / "reuse7_regmix.json", cwd=out)

    # 3. full recomputation over every domain
    full_study = study(out, "full7", natural_path, PROXY, {"synthesize": synth, "out": str(out / "full7")})
    regmix("sweep", full_study, "--no-progress", cwd=out)
    full = sweep_and_fit(out, "full7", out / "full7", natural_path)

    # 4. both choices (and natural) at target scale
    folder = out / "target_mixtures"
    mixes = {"reuse": Mixture.load(out / "reuse7_regmix.json"), "full": Mixture.load(full),
             "natural": Mixture.from_weights(dict(zip(natural.names, natural.weights)), template=natural,
                                             name="natural")}
    for name, m in mixes.items():
        m.rebased(folder).save(folder / f"{name}.json")
    seeds = [int(s) for s in args.seeds.split(",")]
    losses: dict[str, dict[int, float]] = {n: {} for n in mixes}
    for seed in seeds:
        s = study(out, f"target-seed{seed}", natural_path, TARGET_CONFIG,
                  {"mixtures": str(folder), "out": str(out / "target" / f"seed{seed}")}, f" --set train.seed={seed}")
        regmix("sweep", s, "--no-progress", cwd=out)
        table = out / f"target_seed{seed}.csv"
        regmix("collect", out / "target" / f"seed{seed}", "--out", table, cwd=out)
        df = with_target(read_runs(table))
        for _, row in df.iterrows():
            losses[row["run_id"]][seed] = float(row[TARGET])

    def compute(sweep_dir: Path) -> dict:
        spec = json.loads((sweep_dir / "sweep.json").read_text())
        steps = yaml.safe_load(PROXY.read_text())["train"]["steps"]
        return {"runs": len(spec["runs"]), "steps_per_run": steps, "proxy_steps": len(spec["runs"]) * steps}

    results = {
        "dropped": args.drop,
        "compute": {"old": compute(out / "old6"), "reuse": compute(out / "reuse7" / "sweep"),
                    "full": compute(out / "full7")},
        "target_loss": {n: {str(s): v for s, v in d.items()} for n, d in losses.items()},
        "weights": {n: dict(zip(m.names, m.weights)) for n, m in mixes.items()},
        "reuse_plan": json.loads((out / "reuse7" / "plan.json").read_text()),
    }
    atomic_write_json(out / "results.json", results)
    for n, d in losses.items():
        vals = [d[s] for s in seeds]
        print(f"{n:8s} target {sum(vals) / len(vals):.4f}  " + "  ".join(f"seed {s}: {d[s]:.4f}" for s in seeds))
    c = results["compute"]
    print(f"proxy steps: reuse {c['reuse']['proxy_steps']} vs full {c['full']['proxy_steps']} "
          f"({1 - c['reuse']['proxy_steps'] / c['full']['proxy_steps']:.0%} less); the old study's "
          f"{c['old']['proxy_steps']} were already spent")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
