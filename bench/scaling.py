"""Step-law extrapolation error on real proxy training curves.

    .venv/bin/python bench/scaling.py --out bench_out/scaling

Trains proxies with ``regmix train`` (megatron-core GPTModel on CPU) on several mixtures of a real-text
corpus (`regmix_plugin.scale.text`: English reference docs vs standard-library code), then, for each run and
domain, fits the step law L(s) = E + (s0/s)^alpha on the evals up to a fraction of the run and predicts the
final validation loss. Reports the relative error, and the error of the naive "no further progress"
prediction (the last loss seen) for scale.

The shared RegMix data (../shared/data/regmix-pile-1m) holds only final losses, so it has no curves to
benchmark a step law on; it is not used here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "megatron_configs" / "proxy-tiny-cpu.yaml"
MODEL = ["model.hidden_size=32", "model.ffn_hidden_size=64", "model.num_attention_heads=2", "model.seq_length=64"]


def train(mixture: Path, run_dir: Path, steps: int, eval_every: int, schedule: str) -> None:
    from regmix_plugin.cli import main

    sets = [*MODEL, f"train.steps={steps}", "train.global_batch_size=4", "train.micro_batch_size=4",
            "train.threads=1", "train.progress=false", f"eval.every={eval_every}", "eval.samples_per_domain=32",
            "eval.batch_size=8", "optim.warmup_steps=5", "optim.lr=3e-3", "optim.min_lr=3e-4",
            f"optim.lr_schedule={schedule}", "metrics.tensorboard=false"]
    args = ["train", "--mixture", str(mixture), "--config", str(CONFIG), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    if main(args) != 0:
        raise SystemExit(f"training {run_dir} failed; see {run_dir}/outcome.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--prose-weights", default="0.2,0.4,0.6,0.8", help="one run per weight of the prose domain")
    ap.add_argument("--fractions", default="0.3,0.5", help="fit on evals up to these fractions of the run")
    ap.add_argument("--schedules", default="cosine,constant", help="learning-rate schedules to run")
    args = ap.parse_args()

    from regmix_plugin.fit.scaling import StepFitConfig, fit_step_laws, read_eval_curve
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.scale.text import build_text_corpus

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
            done = run_dir / "outcome.json"
            if not (done.is_file() and json.loads(done.read_text()).get("status") == "completed"):
                train(mix_path, run_dir, args.steps, eval_every, schedule)
            curve = read_eval_curve(run_dir)
            final = curve.iloc[-1]
            for frac in (float(x) for x in args.fractions.split(",")):
                cut = int(frac * args.steps)
                seen = curve[curve["step"] <= cut].iloc[-1]
                for shared in (False, True):
                    laws = fit_step_laws(curve, StepFitConfig(min_step=min_step, max_step=cut, shared_alpha=shared))
                    for d, law in laws.items():
                        actual = float(final[f"valid/{d}/loss"])
                        pred = float(law.predict(final["step"]))
                        rows.append({"schedule": schedule, "run": name, "domain": d, "fraction": frac,
                                     "shared_alpha": shared, "actual": actual, "predicted": pred,
                                     "rel_error": (pred - actual) / actual,
                                     "naive_rel_error": (float(seen[f"valid/{d}/loss"]) - actual) / actual,
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
    atomic_write_json(out / "scaling.json", {
        "benchmark": "step-law extrapolation error on real proxy curves", "steps": args.steps,
        "eval_every": eval_every, "min_step": min_step, "summary": summary, "rows": rows,
        "seconds": time.time() - t0, "command": " ".join(sys.argv),
    })
    print(f"\nwrote {out / 'scaling.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
