"""Step-law extrapolation error on real proxy training curves.

    .venv/bin/python bench/scaling.py --out bench_out/scaling

Part 1 trains proxies with ``regmix train`` (megatron-core GPTModel on CPU) on several mixtures of a real-text
corpus (`regmix_plugin.data.stdlib_text`: English reference docs vs standard-library code), then, for each run and
domain, fits the step law L(s) = E + (s0/s)^alpha on the evals up to a fraction of the run and predicts the
final validation loss. Reports the relative error, and the error of the naive "no further progress"
prediction (the last loss seen) for scale.

Part 2 (``--widths``) trains the same mixtures at several model widths, fits the size law
L(N) = E + (N0/N)^alpha on all but the largest (N = non-embedding parameters from the run's config.yaml),
predicts the largest, and runs the rank-invariance check between the smallest and the largest.

The shared RegMix data (../shared/data/regmix-pile-1m) holds only final losses, so it has no curves to
benchmark a step law on; it is not used here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from proxy_runs import train_proxy  # bench/ is on sys.path when a benchmark runs as a script

MODEL = ["model.hidden_size=32", "model.ffn_hidden_size=64", "model.num_attention_heads=2", "model.seq_length=64"]


def train(mixture: Path, run_dir: Path, steps: int, eval_every: int, schedule: str, model=MODEL) -> None:
    sets = [*model, f"train.steps={steps}", "train.global_batch_size=4", "train.micro_batch_size=4",
            "train.threads=1", "train.progress=false", f"eval.every={eval_every}", "eval.samples_per_domain=32",
            "eval.batch_size=8", "optim.warmup_steps=5", "optim.lr=3e-3", "optim.min_lr=3e-4",
            f"optim.lr_schedule={schedule}", "metrics.tensorboard=false"]
    train_proxy(mixture, run_dir, sets)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--prose-weights", default="0.2,0.4,0.6,0.8", help="one run per weight of the prose domain")
    ap.add_argument("--fractions", default="0.3,0.5", help="fit on evals up to these fractions of the run")
    ap.add_argument("--schedules", default="cosine,constant", help="learning-rate schedules to run")
    ap.add_argument("--widths", default="16,24,32,48", help="model widths of the size-law part ('' skips it); "
                    "the law is fitted on all but the largest and predicts the largest")
    ap.add_argument("--size-steps", type=int, default=300)
    args = ap.parse_args()

    from regmix_plugin.scale.laws import StepFitConfig, fit_step_laws
    from regmix_plugin.collect.curves import read_eval_curve
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.data.stdlib_text import build_text_corpus

    out = Path(args.out).resolve()
    natural_path = out / "corpus" / "natural.json"
    if not natural_path.is_file():
        build_text_corpus(out / "corpus", 150_000)
    natural = Mixture.load(natural_path)
    eval_every = max(args.steps // 20, 1)
    min_step = 2 * eval_every  # the first eval sits in the warm-up transient
    rows = []
    t0 = time.time()
    for schedule in args.schedules.split(","):
        for w in (float(x) for x in args.prose_weights.split(",")):
            name = f"{schedule}-prose{w:.2f}"
            mix = Mixture.from_weights({"prose": w, "code": 1 - w}, template=natural, name=name)
            mix_path = mix.save(natural_path.parent / f"{name}.json")  # relative prefixes resolve there
            run_dir = out / "runs" / name
            train(mix_path, run_dir, args.steps, eval_every, schedule)
            curve = read_eval_curve(run_dir)
            final = curve.iloc[-1]
            for frac in (float(x) for x in args.fractions.split(",")):
                cut = int(frac * args.steps)
                seen = curve[curve["step"] <= cut].iloc[-1]
                for shared in (False, True):
                    cfg = StepFitConfig(min_step=min_step, max_step=cut, alpha="shared" if shared else "per-metric")
                    for m, law in fit_step_laws(curve, cfg).items():
                        actual = float(final[m])
                        pred = float(law.predict(final["step"]))
                        rows.append({"schedule": schedule, "run": name, "domain": m.split("/")[1], "fraction": frac,
                                     "shared_alpha": shared, "actual": actual, "predicted": pred,
                                     "rel_error": (pred - actual) / actual,
                                     "naive_rel_error": (float(seen[m]) - actual) / actual,
                                     "E": law.E, "alpha": law.alpha})
    summary = []
    print(f"Step-law extrapolation to step {args.steps} ({len(args.prose_weights.split(','))} mixtures x 2 domains "
          f"per schedule; fit on steps {min_step}..fraction x {args.steps})\n")
    print("| lr schedule | fit on first | alpha | mean abs rel error % | max abs rel error % | naive (last seen) mean % |")
    print("|---|---|---|---|---|---|")
    for schedule in args.schedules.split(","):
        for frac in (float(x) for x in args.fractions.split(",")):
            for shared in (False, True):
                sel = [r for r in rows if r["schedule"] == schedule and r["fraction"] == frac and r["shared_alpha"] == shared]
                e = np.abs([r["rel_error"] for r in sel])
                n = np.abs([r["naive_rel_error"] for r in sel])
                summary.append({"schedule": schedule, "fraction": frac, "shared_alpha": shared,
                                "mean_abs_rel_error": float(e.mean()), "max_abs_rel_error": float(e.max()),
                                "naive_mean_abs_rel_error": float(n.mean()), "n": len(sel)})
                print(f"| {schedule} | {int(frac * 100)}% | {'shared' if shared else 'per domain'} | "
                      f"{100 * e.mean():.2f} | {100 * e.max():.2f} | {100 * n.mean():.2f} |")
    size = size_part(args, out, natural_path) if args.widths else None
    atomic_write_json(out / "scaling.json", {
        "benchmark": "step-law extrapolation error on real proxy curves", "steps": args.steps,
        "eval_every": eval_every, "min_step": min_step, "summary": summary, "rows": rows, "size_law": size,
        "seconds": time.time() - t0, "command": " ".join(sys.argv),
    })
    print(f"\nwrote {out / 'scaling.json'} ({time.time() - t0:.0f} s)")
    return 0


def size_part(args, out: Path, natural_path: Path) -> dict:
    """Size law on real proxies of several widths: fit on the smaller ones, predict the largest; rank check."""
    import yaml

    from regmix_plugin.scale.match import match_tables
    from regmix_plugin.scale.laws import extrapolate_size, rank_invariance
    from regmix_plugin.collect.curves import read_run_curve
    from regmix_plugin.mixture import Mixture

    natural = Mixture.load(natural_path)
    widths = [int(w) for w in args.widths.split(",")]
    weights = [float(x) for x in args.prose_weights.split(",")]
    tables, params = {}, {}
    import pandas as pd

    for h in widths:
        model = [f"model.hidden_size={h}", f"model.ffn_hidden_size={2 * h}", "model.num_attention_heads=2",
                 "model.seq_length=64"]
        rows = []
        for w in weights:
            name = f"width{h}-prose{w:.2f}"
            mix_path = Mixture.from_weights({"prose": w, "code": 1 - w}, template=natural, name=name).save(
                natural_path.parent / f"prose{w:.2f}.json")
            run_dir = out / "size_runs" / name
            train(mix_path, run_dir, args.size_steps, args.size_steps, "cosine", model)
            mix_weights, curve = read_run_curve(run_dir)
            last = curve.iloc[-1]
            rows.append({"run_id": name, "status": "completed", **{f"weight/{d}": v for d, v in mix_weights.items()},
                         **{c: float(last[c]) for c in curve.columns if c.startswith("valid/")}})
        cfg = yaml.safe_load((out / "size_runs" / f"width{h}-prose{weights[0]:.2f}" / "config.yaml").read_text())
        params[h] = float(cfg["run"]["non_embedding_parameters"])
        tables[params[h]] = pd.DataFrame(rows)
    largest = params[widths[-1]]
    fit_on = {n: t for n, t in tables.items() if n != largest}
    # Per-metric exponents: the setting these numbers were first measured with (docs/scaling.md).
    pred = extrapolate_size(fit_on, largest, alpha="per-metric").table
    p, a = match_tables([pred, tables[largest]], ["predicted", "actual"]).tables
    cols = [c for c in p.columns if c.startswith("valid/")]
    errs = {c: float(np.mean(np.abs(p[c] - a[c]) / a[c])) for c in cols}
    naive = {c: float(np.mean(np.abs(tables[params[widths[-2]]].set_index("run_id")[c].to_numpy() - a[c].to_numpy())
                              / a[c].to_numpy())) for c in cols}
    check = rank_invariance(tables[params[widths[0]]], tables[largest])
    print(f"\nSize law on real proxies (widths {', '.join(map(str, widths))}, non-embedding parameters "
          f"{', '.join(f'{params[h]:.0f}' for h in widths)}; {len(weights)} mixtures, {args.size_steps} steps): "
          f"fit on all but the largest, predict the largest\n")
    print("| domain | mean abs rel error % | naive (next-smaller model) % | Spearman rho smallest vs largest |")
    print("|---|---|---|---|")
    rho = dict(zip(check.table["metric"], check.table["rho"]))
    for c in cols:
        print(f"| {c.split('/')[1]} | {100 * errs[c]:.2f} | {100 * naive[c]:.2f} | {rho.get(c, float('nan')):.2f} |")
    return {"widths": widths, "non_embedding_parameters": [params[h] for h in widths], "mean_rel_error": errs,
            "naive_mean_rel_error": naive, "rank_check": check.table.to_dict(orient="records")}


if __name__ == "__main__":
    raise SystemExit(main())
