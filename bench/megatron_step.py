"""A Megatron-LM training step with the plugin's batch and loss path, before and after the host sync was removed.

    .venv/bin/python bench/megatron_step.py --out bench_out/megatron_step [--repeats 2] [--old-commit 720379c]

Issue 23 point 7: the plugin's ``get_batch`` read the micro-batch size back from the device (``.item()``)
after an extra broadcast, once per micro-batch. This runs Megatron's ``pretrain()`` on CPU (gloo, through the
CPU patches of tests/megatron_cpu; bench/megatron_eval_runner.py's ``step`` mode) on a tiny GPT with 8
micro-batches per step, where training steps alternate between today's forward step and the one in
``regmix_plugin/megatron/loss.py`` at ``--old-commit`` (read with ``git show``): the same process, model, data
and load. Each step is timed whole (``train_step``: 8 forward/backward passes, the optimizer step); the ratio
of neighbouring steps (old / current) is taken pair by pair, first pairs dropped as warm-up, and reported as a
median, by wall time and by the rank's CPU time. ``--tp 2`` runs the same with two tensor-parallel ranks,
where the old path also made an extra broadcast per micro-batch.

On a CPU ``.item()`` waits for nothing (every op has already run), so this measures only the host-side cost of
the removed broadcast and read; what the sync costs on a GPU cannot be measured here (see BENCHMARKS.md).
Writes megatron_step.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("web", "code", "books", "papers")
WARMUP_PAIRS = 3


def launch(tp: int, steps: int, corpus: Path, work: Path, old_loss: Path, times: Path) -> list[dict]:
    flags = [
        "--num-layers", "2", "--hidden-size", "128", "--ffn-hidden-size", "256", "--num-attention-heads", "4",
        "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "1",
        "--global-batch-size", "8", "--train-samples", str(8 * steps), "--lr", "1e-3",
        "--tokenizer-type", "NullTokenizer", "--vocab-size", "257", "--distributed-backend", "gloo",
        "--tensor-model-parallel-size", str(tp), "--data-mixture-from", str(corpus), "--eval-interval", "100000",
        "--eval-iters", "0", "--log-interval", "1000", "--save", str(work), "--save-interval", "100000",
        "--attention-dropout", "0", "--hidden-dropout", "0",
    ]
    env = dict(os.environ, REGMIX_BENCH_MODE="step", REGMIX_BENCH_TIMES=str(times), REGMIX_BENCH_OLD_LOSS=str(old_loss),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp}",
           str(REPO / "bench" / "megatron_eval_runner.py"), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    if proc.returncode:
        raise SystemExit(f"TP={tp} launch failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return [json.loads(x) for x in times.read_text().splitlines()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench_out/megatron_step")
    ap.add_argument("--repeats", type=int, default=2, help="launches per layout")
    ap.add_argument("--steps", type=int, default=60, help="training steps per launch (half of them old)")
    ap.add_argument("--tp", default="1,2", help="tensor-parallel sizes to run (comma-separated)")
    ap.add_argument("--old-commit", default="720379c", help="the commit whose loss.py is the 'old' path")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old_source = subprocess.run(["git", "show", f"{args.old_commit}:regmix_plugin/megatron/loss.py"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    result: dict = {"old_commit": args.old_commit, "steps": args.steps, "repeats": args.repeats, "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="regmix-bench-step-") as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(REPO / "tests"))
        from proxy_helpers import make_corpus

        corpus = make_corpus(tmp / "corpus", DOMAINS, docs=160)
        old_loss = tmp / "old_loss.py"
        old_loss.write_text(old_source)
        for tp in [int(x) for x in args.tp.split(",")]:
            ratios, cpu_ratios, seconds = [], [], {"current": [], "old": []}
            for r in range(args.repeats):
                recs = launch(tp, args.steps, corpus, tmp / f"tp{tp}-{r}", old_loss, tmp / f"tp{tp}-{r}.jsonl")
                pairs = list(zip(recs[0::2], recs[1::2]))[WARMUP_PAIRS:]
                assert all(a["mode"] == "current" and b["mode"] == "old" for a, b in pairs)
                ratios += [b["seconds"] / a["seconds"] for a, b in pairs]
                cpu_ratios += [b["cpu_seconds"] / a["cpu_seconds"] for a, b in pairs]
                for a, b in pairs:
                    seconds["current"].append(a["seconds"])
                    seconds["old"].append(b["seconds"])
                print(f"TP={tp} repeat {r + 1}/{args.repeats}: {len(recs)} steps", file=sys.stderr, flush=True)
            result["layouts"][f"TP={tp}"] = {
                "median_step_s": {m: statistics.median(v) for m, v in seconds.items()},
                "old_over_current": statistics.median(ratios), "cpu_old_over_current": statistics.median(cpu_ratios),
                "pairs": len(ratios), "ratios": ratios, "cpu_ratios": cpu_ratios,
            }
    lines = ["| layout | step, current (median s) | step, old (median s) | old / current, wall (median of pairs) | "
             "old / current, CPU time | pairs |", "|---|---|---|---|---|---|"]
    for name, v in result["layouts"].items():
        lines.append(f"| {name} | {v['median_step_s']['current']:.4f} | {v['median_step_s']['old']:.4f} | "
                     f"{v['old_over_current']:.3f}x | {v['cpu_old_over_current']:.3f}x | {v['pairs']} |")
    print(f"Megatron training step, 8 micro-batches of 1 x 64 tokens, old = loss.py at {args.old_commit}\n")
    print("\n".join(lines))
    (out / "megatron_step.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
