"""Issue 25's measurement, as fixed in DECISIONS 76: a two-phase schedule chosen by regression against the demo's
optimised single mixture and natural, at the demo's proxy and target scales, paired over the demo's seeds.

Run it on a finished demo (`regmix demo --out DIR`, same flags as given here): the corpus, evaluation sets,
configs, kernels pin and the single mixture's target runs are the demo's, reused as they are. It adds

1. `regmix synthesize --phases 0.8` (the demo's proxy count, held-out count and seed; independent phases),
2. `regmix sweep` of those schedules at the demo's proxy scale (`train --schedule {schedule}`),
3. `regmix collect`, `regmix fit --predictor auto` (the control averaged-exposure beside), predictions of the
   held-out schedules, `regmix optimize` with the demo's base mixture,
4. `regmix export --format schedule --train-iters <target steps>` and the target model on it, one run per seed,
5. a markdown section: target means, paired gains against the single mixture and natural (t-test p, seeds won),
   predicted vs realised gain, and the CV rows of phase-law, the control and the chosen predictor.

    .venv/bin/python bench/demo_phases.py --demo demo_out --out bench_out/demo_phases

Cost at the demo's sizes: about 40 proxy runs and 5 target runs (roughly 530 + 230 CPU-s on a quiet machine,
BENCHMARKS.md "The demo"). Not run yet (DECISIONS 76).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from regmix_plugin.demo.config import DemoConfig
from regmix_plugin.demo.run import Demo, _digest, run_env, target_table, with_target
from regmix_plugin.io import atomic_write_text
from regmix_plugin.mixture import Mixture
from regmix_plugin.sweep.study import SCHEDULE_COMMAND, write_study
from regmix_plugin.table import read_runs, write_runs

BOUNDARY = 0.8  # DECISIONS 76: Marin's switch, fixed before any run


def paired_against(df: pd.DataFrame, target: str, tested: str, baselines: list[str]) -> dict[str, dict]:
    """Per baseline: the mean over seeds of (baseline - tested) (> 0: the tested one is better), its std, the
    two-sided paired t-test p and the seeds won; the same statistics as the demo's report (demo/report.py)."""
    from scipy.stats import t as student_t

    wide = df.pivot_table(index="seed", columns="mixture", values=target)
    out = {}
    for base in baselines:
        d = (wide[base] - wide[tested]).dropna().to_numpy()
        n = len(d)
        std = float(d.std(ddof=1)) if n > 1 else float("nan")
        p = float(2 * student_t.sf(abs(d.mean() / (std / np.sqrt(n))), n - 1)) if n > 1 and std > 0 else float("nan")
        out[base] = {"gain": float(d.mean()), "gain std": std, "p": p, "seeds": n, "better on": int((d > 0).sum())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="a finished `regmix demo --out DIR`")
    ap.add_argument("--out", default="bench_out/demo_phases")
    ap.add_argument("--proxies", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=8)
    ap.add_argument("--target-seeds", default="1,2,3,4,5")
    ap.add_argument("--proxy-config", type=Path, default=None)
    ap.add_argument("--target-config", type=Path, default=None)
    ap.add_argument("--domains", default=None)
    ap.add_argument("--predictor", default="auto")
    args = ap.parse_args(argv)
    kw = {k: v for k, v in (("proxy_config", args.proxy_config), ("target_config", args.target_config)) if v}
    cfg = DemoConfig(out=Path(args.demo), proxies=args.proxies, heldout=args.heldout,
                     target_seeds=[int(s) for s in args.target_seeds.split(",")], predictor=args.predictor,
                     domains=args.domains.split(",") if args.domains else None, **kw)
    demo = Demo(cfg, log=lambda *a, **k: print(*a, file=sys.stderr, flush=True, **k))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    natural = demo.path("corpus", "natural.json")

    # 1-2. schedules at proxy scale
    mixtures = out / "mixtures" / _digest(demo.mixtures_dir.name, BOUNDARY)
    if not (mixtures / "manifest.json").is_file():
        demo.regmix("synthesize", natural, "--out", mixtures, "--n", cfg.proxies, "--heldout", cfg.heldout,
                    "--seed", cfg.seed, "--phases", BOUNDARY)
    proxy_dir = out / "proxy" / _digest(mixtures.name, demo.proxy_config.read_text(), json.dumps(run_env(), sort_keys=True))
    study = write_study(out / "study-proxy.yaml", {
        "name": "phases-proxy", "base_mixture": str(natural), "proxy_config": str(demo.proxy_config),
        "mixtures": str(mixtures), "out": str(proxy_dir), "command": SCHEDULE_COMMAND, "env": run_env(),
        "runs": {"retries": 1}, "backend": "local", "local": {"max_concurrent": cfg.workers}})
    demo.regmix("sweep", study)

    # 3. collect, fit (held-out schedules predicted once), optimise
    demo.regmix("collect", proxy_dir, "--out", out / "runs_all.csv")
    df = with_target(read_runs(out / "runs_all.csv"), cfg.target)
    done = df[df["status"] == "completed"]
    held = done["split"] == "heldout"
    write_runs(done[~held], out / "runs.csv")
    write_runs(done[held], out / "runs_heldout.csv")
    demo.regmix("fit", "--runs", out / "runs.csv", "--target", demo.fit_target, "--predictor", cfg.predictor,
                "--out", out / "model")
    model = json.loads((out / "model" / "model.json").read_text())
    held_rho = None
    if held.sum() >= 3:
        cols = ["run_id"] + [c for c in done.columns if c.startswith("weight/")]
        atomic_write_text(out / "heldout_schedules.csv", done[held][cols].to_csv(index=False))
        demo.regmix("predict", "--model", out / "model", "--mixtures", out / "heldout_schedules.csv",
                    "--out", out / "heldout_predictions.csv")
        pred = pd.read_csv(out / "heldout_predictions.csv")["prediction"].to_numpy()
        held_rho = float(pd.Series(pred).corr(pd.Series(done[held][demo.target].to_numpy()), method="spearman"))
    demo.regmix("optimize", "--model", out / "model", "--base-mixture", natural, "--out", out / "opt" / "schedule.yaml")

    # 4. the schedule at target scale, one run per seed (the demo's single mixture and natural are its own runs)
    steps = int(yaml.safe_load(demo.target_config.read_text())["train"]["steps"])
    target_sched = out / "target_schedule" / "schedule.yaml"
    target_sched.parent.mkdir(parents=True, exist_ok=True)
    demo.regmix("export", out / "opt" / "schedule.yaml", "--format", "schedule", "--train-iters", steps,
                "--out", target_sched)
    cand = out / "target_candidates"
    (cand / "schedule").mkdir(parents=True, exist_ok=True)
    # one candidate folder, as synthesis writes them: <id>/schedule.yaml with the phases beside it
    sched_doc = yaml.safe_load(target_sched.read_text())
    for k, p in enumerate(sched_doc["phases"]):
        Mixture.load(p["mixture"]).rebased(cand / "schedule").save(cand / "schedule" / f"phase{k}.json")
        p["fraction"] = p.pop("start") / steps
        p["mixture"] = f"phase{k}.json"
    atomic_write_text(cand / "schedule" / "schedule.yaml", yaml.safe_dump(sched_doc, sort_keys=False))
    rows = []
    for seed in cfg.target_seeds:
        tdir = out / "target" / _digest(demo.target_config.read_text(), json.dumps(run_env(), sort_keys=True)) / f"seed{seed}"
        st = write_study(out / f"study-target-seed{seed}.yaml", {
            "name": f"phases-target-seed{seed}", "base_mixture": str(natural), "proxy_config": str(demo.target_config),
            "mixtures": str(cand), "out": str(tdir), "command": SCHEDULE_COMMAND + f" --set train.seed={seed}",
            "env": run_env(), "runs": {"retries": 1}, "backend": "local", "local": {"max_concurrent": cfg.workers}})
        demo.regmix("sweep", st)
        demo.regmix("collect", tdir / "runs" / "schedule", "--out", out / f"target_runs_seed{seed}.csv")
        r = with_target(read_runs(out / f"target_runs_seed{seed}.csv"), cfg.target)
        rows.append({"mixture": "schedule", "seed": seed, demo.target: float(r[demo.target].iloc[0])})

    # 5. paired comparison on the demo's seeds
    single = target_table(demo)
    single = single[single["mixture"].isin(["regmix", "natural"])][["mixture", "seed", demo.target]]
    both = pd.concat([single, pd.DataFrame(rows)], ignore_index=True)
    both["mixture"] = both["mixture"].replace({"regmix": "single mixture"})
    paired = paired_against(both, demo.target, "schedule", ["single mixture", "natural"])
    means = both.groupby("mixture")[demo.target].agg(["mean", "std"])
    prov = yaml.safe_load((out / "opt" / "phase0.json").read_text())["provenance"]
    gain = prov["predicted_gain_over_best_single_mixture"]
    rho = {r["predictor"]: r["spearman"] for r in model["cv"]}
    lines = [f"## Two-phase schedule against the single mixture (demo corpus, boundary {BOUNDARY}, DECISIONS 76)", "",
             f"`{sys.executable} bench/demo_phases.py --demo {args.demo} --out {args.out}`", "",
             "| mixture | mean | std |", "|---|---|---|"]
    lines += [f"| {m} | {r['mean']:.4f} | {r['std']:.4f} |" for m, r in means.iterrows()]
    lines += ["", "| schedule against | gain (paired) | std | p | schedule better on |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {r['gain']:+.4f} | {r['gain std']:.4f} | {r['p']:.3g} | {r['better on']} of {r['seeds']} |"
              for b, r in paired.items()]
    iv = gain.get("interval") or {}
    lines += ["", f"- predicted gain over the best single mixture (proxy model): {gain['predicted']:+.4f}"
              + (f" ({iv['coverage']:.0%} interval {iv['lower']:+.4f} to {iv['upper']:+.4f})" if iv.get("lower") is not None else ""),
              f"- realised gain over the demo's optimised single mixture: {paired['single mixture']['gain']:+.4f}",
              f"- fit: chose {model['chosen']} (CV rho {rho.get(model['chosen'], float('nan')):.2f}); phase-law "
              f"{rho.get('phase-law', float('nan')):.2f}, the control averaged-exposure {rho.get('averaged-exposure', float('nan')):.2f}"
              + (f"; held-out schedules rho {100 * held_rho:.1f}" if held_rho is not None else "")]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "demo_phases.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
