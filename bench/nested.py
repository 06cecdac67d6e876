"""Nested prediction (Data Mixing Laws) on real CPU proxies: along steps, then along size, to the largest model.

    .venv/bin/python bench/nested.py --out bench_out/nested

Trains the CPU proxy (`regmix train`, megatron-core GPTModel, 2 layers) at several widths on several
mixtures of two training domains (standard-library code, Debian changelogs), and evaluates every run on four
sets: the two it trains on and two it never sees (Python's reference docs, license texts;
`regmix_plugin/data/stdlib_text.py`). Every training domain holds more tokens than the longest run draws from it
(no repeated data). Learning rate constant after a short warm-up (the stable phase of a
warm-up-stable-decay schedule), so that a curve's first third is the start of the full run.

The prediction sees, at every size but the largest, the evals up to a third of the run, and predicts the
largest size's metrics at the last step: step laws extrapolate each size 3x along steps
(`extrapolate_steps`), then size laws extrapolate each mixture and metric to the largest size
(`extrapolate_size`). Measured against the largest model's real evals there (`scale.accuracy.score`):

- **default**: the settings choose themselves (held-out tails per size; held-out largest size for the size
  law when there are 4 or more sizes);
- **previous defaults**: per-metric exponents, every eval from the first, per-metric size law (the defaults
  before they chose themselves, with today's solver);
- **naive**: "no further progress", the largest fitted size's last seen value.

The curves after the first third (all sizes) also give the step law's own error at each size, and the size
law alone (every fitted size measured at the last step) is scored too, to tell the two stages apart. The
evaluation noise of the target (relative spread of the largest model's evals about a smooth curve over the
last third of its run) says how close to 0 any prediction of one eval can come.

``--target-step S`` measures at step S of the same runs instead of the last. With the largest width left out
of ``--widths`` and S = the seen step (``--widths 24,32,48,64 --target-step 1500``) it is the same nested
protocol one size and 3x in steps earlier, on data the full prediction sees: a backtest that could choose the
law settings without looking at the target.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from proxy_runs import train_proxy  # bench/ is on sys.path when a benchmark runs as a script

TRAIN_KINDS = ("code", "changelogs")
EVAL_ONLY = ("prose", "licenses")


def lr_for(width: int) -> float:
    # One pilot mixture at 1500 steps: width 256 at 2e-3 ended worse than width 128 (1.96 vs 1.74 prose
    # loss), at 1e-3 better (1.60); widths up to 128 did best at 2e-3. So 2e-3, scaled as 1/width above 128.
    return 2e-3 * min(1.0, 128 / width)


def train(mixture: Path, run_dir: Path, width: int, steps: int, eval_every: int) -> None:
    lr = lr_for(width)
    sets = [f"model.hidden_size={width}", f"model.ffn_hidden_size={4 * width}", "model.num_attention_heads=4",
            "model.seq_length=64", f"train.steps={steps}", "train.global_batch_size=8", "train.micro_batch_size=8",
            "train.threads=1", "train.progress=false", f"eval.every={eval_every}", "eval.samples_per_domain=64",
            "eval.batch_size=32", "optim.warmup_steps=20", f"optim.lr={lr}", f"optim.min_lr={lr}",
            "optim.lr_schedule=constant", "metrics.tensorboard=false"]
    train_proxy(mixture, run_dir, sets)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--widths", default="24,32,48,64,96", help="model widths; the largest is the target")
    ap.add_argument("--code-weights", default="0.1,0.25,0.4,0.55,0.7,0.85", help="one mixture per code weight")
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--corpus-chars", type=int, default=2_500_000, help="characters per domain (at most what exists)")
    ap.add_argument("--seen", type=float, default=1 / 3, help="fraction of the run the prediction sees")
    ap.add_argument("--target-step", type=int, default=None,
                    help="measure at this step of the runs (default: --steps); see the module docstring")
    ap.add_argument("--train-only", action="store_true", help="train (or finish training) and stop")
    args = ap.parse_args()

    import yaml

    from regmix_plugin.mixture import Mixture
    from regmix_plugin.data.stdlib_text import build_text_corpus

    out = Path(args.out).resolve()
    natural_path = out / "corpus" / "natural.json"
    if not natural_path.is_file():
        build_text_corpus(out / "corpus", args.corpus_chars, TRAIN_KINDS + EVAL_ONLY, whole=True)
    natural = Mixture.load(natural_path)
    widths = [int(w) for w in args.widths.split(",")]
    weights = [float(x) for x in args.code_weights.split(",")]
    t0 = time.time()
    runs, params = {}, {}
    for h in widths:
        runs[h] = {}
        for w in weights:
            # The evaluation-only sets are weight-0 domains: evaluated, never trained on.
            mix = Mixture.from_weights({"code": w, "changelogs": 1 - w, **{k: 0.0 for k in EVAL_ONLY}},
                                       template=natural, name=f"code{w:.2f}")
            mix_path = mix.save(natural_path.parent / f"code{w:.2f}.json")
            run_dir = out / "runs" / f"w{h}" / f"code{w:.2f}"
            train(mix_path, run_dir, h, args.steps, args.eval_every)
            runs[h][run_dir.name] = run_dir
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        params[h] = float(cfg["run"]["non_embedding_parameters"])
        print(f"width {h}: {params[h]:.0f} non-embedding parameters, trained ({time.time() - t0:.0f} s)", flush=True)
    if args.train_only:
        return 0
    result = measure(args, runs, params, widths)
    result["seconds"] = time.time() - t0
    result["command"] = " ".join(sys.argv)
    from regmix_plugin.io import atomic_write_json

    atomic_write_json(out / "nested.json", result)
    print(f"\nwrote {out / 'nested.json'}")
    return 0


def measure(args, runs: dict, params: dict, widths: list[int]) -> dict:
    from regmix_plugin.scale.laws import StepFitConfig, extrapolate_size, extrapolate_steps
    from regmix_plugin.collect.curves import read_run_curve
    from regmix_plugin.scale.accuracy import score
    from regmix_plugin.table import eval_columns

    target_w, fit_w = widths[-1], widths[:-1]
    target_step = args.target_step or args.steps
    seen = int(round(target_step * args.seen))
    curves = {h: {name: read_run_curve(d) for name, d in runs[h].items()} for h in widths}

    def at_step(h: int, step: float) -> pd.DataFrame:
        """The measured runs table of width ``h`` at ``step`` (the last eval at or before it)."""
        rows = []
        for name, (weights, curve) in curves[h].items():
            last = curve[curve["step"] <= step].iloc[-1]
            rows.append({"run_id": name, "status": "completed", **{f"weight/{d}": v for d, v in weights.items()},
                         **{c: float(last[c]) for c in eval_columns(curve)}})
        return pd.DataFrame(rows)

    actual = at_step(target_w, target_step)
    metrics = eval_columns(actual)
    variants = {
        "default (settings choose themselves)": (StepFitConfig(max_step=seen), "auto"),
        "previous defaults (per-metric, all evals)": (StepFitConfig(max_step=seen, alpha="per-metric", min_step=1),
                                                       "per-metric"),
    }
    out: dict = {"widths": widths, "non_embedding_parameters": [params[h] for h in widths], "steps": target_step,
                 "seen_steps": seen, "metrics": metrics, "variants": {}}
    print(f"\nNested prediction at width {target_w} ({params[target_w]:.0f} parameters), step {target_step}, from "
          f"widths {', '.join(map(str, fit_w))} seen up to step {seen}; {len(actual)} mixtures x {len(metrics)} "
          "evaluation sets\n")
    print("| settings | MARE % | bias % | max % | pairs in order (mean over sets) % | step law MARE % per fitted width |")
    print("|---|---|---|---|---|---|")
    for label, (cfg, size_alpha) in variants.items():
        t = time.time()
        steps = {params[h]: extrapolate_steps(curves[h], float(target_step), cfg) for h in fit_w}
        size = extrapolate_size({n: r.table for n, r in steps.items()}, params[target_w], alpha=size_alpha)
        acc = score(size.table, actual, metrics)
        step_err = {h: score(steps[params[h]].table, at_step(h, target_step), metrics).overall["mare"] for h in fit_w}
        o = acc.overall
        out["variants"][label] = {
            "overall": o, "per_metric": acc.metrics, "mixtures": acc.mixtures.to_dict(orient="records"),
            "step_settings": {str(h): steps[params[h]].choice.to_dict() for h in fit_w},
            "size_settings": size.choice.to_dict(), "step_law_mare_per_width": step_err, "seconds": time.time() - t}
        print(f"| {label} | {100 * o['mare']:.2f} | {100 * o['bias']:+.2f} | {100 * o['max_abs_rel_error']:.2f} | "
              f"{100 * o['pairs_in_order_per_metric']:.0f} | "
              f"{', '.join(f'{h}: {100 * e:.2f}' for h, e in step_err.items())} |")
    # The size stage alone: every fitted size measured at the last step, the largest predicted from them.
    size_only = extrapolate_size({params[h]: at_step(h, target_step) for h in fit_w}, params[target_w])
    acc = score(size_only.table, actual, metrics)
    o = acc.overall
    out["size_law_only"] = {"overall": o, "per_metric": acc.metrics, "size_settings": size_only.choice.to_dict()}
    print(f"| size law only: widths {', '.join(map(str, fit_w))} measured at step {target_step} | {100 * o['mare']:.2f} | "
          f"{100 * o['bias']:+.2f} | {100 * o['max_abs_rel_error']:.2f} | {100 * o['pairs_in_order_per_metric']:.0f} | - |")
    naive = at_step(fit_w[-1], seen)
    acc = score(naive, actual, metrics)
    o = acc.overall
    out["naive"] = {"overall": o, "per_metric": acc.metrics}
    print(f"| naive: width {fit_w[-1]} at step {seen} (no further progress) | {100 * o['mare']:.2f} | "
          f"{100 * o['bias']:+.2f} | {100 * o['max_abs_rel_error']:.2f} | {100 * o['pairs_in_order_per_metric']:.0f} | - |")
    noise = eval_noise(curves[target_w], target_step)
    out["target_eval_noise"] = noise
    print(f"| evaluation noise of the target: relative std of width {target_w}'s evals about a smooth curve, "
          f"steps {target_step * 2 // 3}-{target_step} | {100 * noise:.2f} | - | - | - | - |")
    print("\nper evaluation set, MARE % (default / previous defaults / naive):")
    for i, m in enumerate(metrics):
        vals = [out["variants"][k]["per_metric"][i]["mare"] for k in variants] + [out["naive"]["per_metric"][i]["mare"]]
        print(f"  {m}: " + " / ".join(f"{100 * v:.2f}" for v in vals))
    for label in variants:
        v = out["variants"][label]
        choices = "; ".join(f"w{h}: {c['alpha']}, from step {c['min_step']}" for h, c in v["step_settings"].items())
        print(f"{label}: step settings {choices}; size law {v['size_settings']['alpha']} ({v['size_settings']['how']})")
    return out


def eval_noise(runs: dict, last: int) -> float:
    """Median over runs and metrics of the relative std of the evals in the last third up to ``last`` about a
    quadratic in log step (a smooth curve), i.e. the error any prediction of a single eval there is left with."""
    from regmix_plugin.table import eval_columns

    spreads = []
    for _, curve in runs.values():
        tail = curve[(curve["step"] > last * 2 / 3) & (curve["step"] <= last)]
        z = np.log(tail["step"].to_numpy(float))
        for m in eval_columns(curve):
            ly = np.log(tail[m].to_numpy(float))
            spreads.append(float(np.std(ly - np.polyval(np.polyfit(z, ly, 2), z))))
    return float(np.median(spreads))


if __name__ == "__main__":
    raise SystemExit(main())
