"""Continual pretraining on CPU with the built-in proxy trainer: how much original data to replay.

    .venv/bin/python examples/continual_cpu.py --out continual_out

1. builds a two-domain corpus of real text every Python install carries (the English reference docs in
   ``pydoc_data`` = "prose", standard-library source = "code");
2. trains a base model on the original data (prose) with ``regmix train``;
3. ``regmix continual sweep`` writes one continual mixture per replay proportion p (share of prose) and a
   study whose command resumes every run from the base checkpoint (``--init-from``);
4. ``regmix sweep`` runs that study with the local backend (``--backend slurm`` works the same way);
5. ``regmix continual fit`` fits old/new-domain loss against p and reports the critical proportion;
6. trains once more at the critical proportion to check the prediction, and fits the step law of the
   base run (``regmix scale fit``) for the loss-vs-steps figure.

Takes about 2-4 minutes on 2 cores (8 short runs). Every step is a plain ``regmix`` command, printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# A tiny GPT (2 layers, width 32) on 64-token sequences: a few ms per step on one core.
MODEL = {"num_layers": 2, "hidden_size": 32, "ffn_hidden_size": 64, "num_attention_heads": 2, "seq_length": 64}


def regmix(*args: str) -> None:
    cmd = [sys.executable, "-m", "regmix_plugin", *args]
    print("$ regmix " + " ".join(shlex.quote(a) for a in args), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    subprocess.run(cmd, check=True, env=env, cwd=REPO)


def proxy_config(path: Path, steps: int, lr: float, min_lr: float, eval_every: int) -> Path:
    cfg = {
        "model": MODEL,
        "train": {"steps": steps, "global_batch_size": 4, "micro_batch_size": 4, "device": "cpu", "threads": 1,
                  "log_every": 10, "progress": False},
        "optim": {"lr": lr, "min_lr": min_lr, "lr_schedule": "cosine", "warmup_steps": 5},
        "eval": {"every": eval_every, "samples_per_domain": 32, "batch_size": 8},
        "metrics": {"tensorboard": True},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="continual_out", help="output folder")
    ap.add_argument("--base-steps", type=int, default=300)
    ap.add_argument("--continual-steps", type=int, default=100)
    ap.add_argument("--tolerance", type=float, default=0.0, help="allowed rise of the old-domain loss (nats)")
    ap.add_argument("--max-concurrent", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from regmix_plugin.mixture import Mixture
    from regmix_plugin.data.stdlib_text import build_text_corpus

    corpus = out / "corpus"
    if not (corpus / "natural.json").is_file():
        print(f"building {corpus} (prose: pydoc reference docs, code: stdlib sources)", flush=True)
        build_text_corpus(corpus, 150_000)
    natural = Mixture.load(corpus / "natural.json")
    # Weight-0 domains stay in the mixture so that every run evaluates both domains.
    for name, weights in (("old", {"prose": 1.0, "code": 0.0}), ("new", {"prose": 0.0, "code": 1.0})):
        Mixture.from_weights(weights, template=natural, name=name).save(corpus / f"{name}.json")
    base_cfg = proxy_config(out / "base.yaml", args.base_steps, 3e-3, 3e-4, max(args.base_steps // 20, 1))
    # Continual runs re-warm to a lower peak and decay again, as continual pretraining usually does.
    cont_cfg = proxy_config(out / "continual.yaml", args.continual_steps, 1e-3, 1e-4, 0)

    if not (out / "base" / "outcome.json").is_file():
        regmix("train", "--mixture", str(corpus / "old.json"), "--config", str(base_cfg), "--run-dir", str(out / "base"))
    regmix("continual", "sweep", "--original", str(corpus / "old.json"), "--new", str(corpus / "new.json"),
           "--base-ckpt", str(out / "base"), "--base-run", str(out / "base"), "--config", str(cont_cfg),
           "--out", str(out / "sweep"), "--proportions", "0,0.2,0.4,0.6,0.8",
           "--max-concurrent", str(args.max_concurrent))
    regmix("sweep", str(out / "sweep" / "study.yaml"), "--no-progress")
    regmix("continual", "fit", "--plan", str(out / "sweep"), "--tolerance", str(args.tolerance))

    fit = json.loads((out / "sweep" / "continual_fit.json").read_text())
    p_star = fit["critical_proportion"]
    if p_star is not None:
        from regmix_plugin.continual.replay import ContinualSpec, continual_mixture, final_losses

        old, new = Mixture.load(corpus / "old.json"), Mixture.load(corpus / "new.json")
        continual_mixture(old, new, p_star).save(out / "p_star.json")
        regmix("train", "--mixture", str(out / "p_star.json"), "--config", str(cont_cfg), "--run-dir",
               str(out / "p_star"), "--init-from", str(out / "base"))
        measured = ContinualSpec.from_mixtures(old, new).old_loss(final_losses(out / "p_star"))
        verdict = "within" if measured <= fit["target_old_loss"] else "OVER"
        print(f"check: trained at p* = {p_star:.3f}: old-domain loss {measured:.4f} vs target "
              f"{fit['target_old_loss']:.4f} -> {verdict} the tolerance")
    regmix("scale", "fit", str(out / "base"), "--target", str(3 * args.base_steps), "--min-step",
           str(2 * max(args.base_steps // 20, 1)), "--out", str(out / "steps"))
    print(f"\nreports: {out / 'sweep' / 'continual_report.md'} (continual.png), {out / 'steps' / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
