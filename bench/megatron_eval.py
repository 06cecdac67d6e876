"""What one per-domain evaluation costs in Megatron-LM's real training loop (CPU, gloo), side by side.

    .venv/bin/python bench/megatron_eval.py --out bench_out/megatron_eval [--repeats 3] [--nproc 1]

Runs Megatron's ``pretrain()`` (through bench/megatron_eval_runner.py, with the CPU patches of
tests/megatron_cpu) on a tiny GPT and a 4-domain corpus, and times every whole evaluation
(``evaluate_and_print_results``) in four set-ups, launched interleaved ``--repeats`` times:

* ``plugin``: the plugin's per-domain evaluation (goal: at most 1.05x ``plain``);
* ``plain``: the same fixed validation set, Megatron's plain ``lm loss`` only;
* ``native``: megatron-core 0.19's per-dataset validation (``--multiple-validation-sets --full-validation
  --validation-set-names``), with the evaluation batch sizes of the run;
* ``native-mb1``: the same with ``--eval-micro-batch-size 1 --eval-global-batch-size <dp>``, the only setting
  where it reads each sample once (its sampler always yields one sample per rank).

The first evaluation of each launch is warm-up and is dropped; the table gives the median of the rest and the
ratio to ``plain``. Writes megatron_eval.json to --out.
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


def make_corpus(root: Path) -> Path:
    """4 domains of byte tokens, each from its own unigram distribution, with 32 validation sequences of 64."""
    sys.path.insert(0, str(REPO / "tests"))
    from proxy_helpers import make_corpus as tiny_corpus

    return tiny_corpus(root, DOMAINS, docs=160)


def launch(mode: str, nproc: int, corpus: Path, work: Path, times: Path) -> None:
    names = ["--validation-set-names", *DOMAINS]
    extra = {
        "plugin": [],
        "plain": ["--no-regmix-per-domain-eval"],
        "native": ["--multiple-validation-sets", "--full-validation", *names],
        "native-mb1": ["--multiple-validation-sets", "--full-validation", *names,
                       "--eval-micro-batch-size", "1", "--eval-global-batch-size", str(nproc)],
    }[mode]
    flags = [
        "--num-layers", "2", "--hidden-size", "128", "--ffn-hidden-size", "256", "--num-attention-heads", "4",
        "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "4",
        "--global-batch-size", str(8 * nproc), "--train-samples", str(48 * nproc), "--lr", "1e-3",
        "--tokenizer-type", "NullTokenizer", "--vocab-size", "257", "--distributed-backend", "gloo",
        "--data-mixture-from", str(corpus), "--eval-interval", "2", "--log-interval", "100",
        "--save", str(work / mode), "--save-interval", "1000", "--regmix-valid-samples-per-domain", "32",
    ]
    env = dict(os.environ, REGMIX_BENCH_MODE=mode.split("-")[0], REGMIX_BENCH_TIMES=str(times),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(REPO / "bench" / "megatron_eval_runner.py"), *flags, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    if proc.returncode:
        raise SystemExit(f"{mode} launch failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench_out/megatron_eval")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=1, help="data-parallel ranks")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modes = ("plugin", "plain", "native", "native-mb1")
    with tempfile.TemporaryDirectory(prefix="regmix-bench-eval-") as tmp:
        tmp = Path(tmp)
        corpus = make_corpus(tmp / "corpus")
        times = {m: tmp / f"{m}.jsonl" for m in modes}
        for r in range(args.repeats):
            for m in modes:
                before = len(times[m].read_text().splitlines()) if times[m].exists() else 0
                launch(m, args.nproc, corpus, tmp / f"run{r}", times[m])
                print(f"repeat {r + 1}/{args.repeats} {m}: {len(times[m].read_text().splitlines()) - before} evaluations",
                      file=sys.stderr, flush=True)
        result = {}
        for m in modes:
            recs = [json.loads(x) for x in times[m].read_text().splitlines()]
            # Group by launch: every launch evaluates at the same iterations; drop each launch's first (warm-up).
            per_launch = len(recs) // args.repeats
            kept = [rec["seconds"] for i, rec in enumerate(recs) if i % per_launch]
            result[m] = {"median_s": statistics.median(kept), "evaluations": len(kept)}
    plain = result["plain"]["median_s"]
    lines = ["| validation path | s per evaluation (median) | vs plain | evaluations timed |", "|---|---|---|---|"]
    for m in modes:
        result[m]["ratio_to_plain"] = result[m]["median_s"] / plain
        lines.append(f"| {m} | {result[m]['median_s']:.3f} | {result[m]['ratio_to_plain']:.2f}x | {result[m]['evaluations']} |")
    table = "\n".join(lines)
    print(f"Megatron evaluation, {len(DOMAINS)} domains x 32 validation sequences of 64 tokens, DP={args.nproc}\n")
    print(table)
    (out / "megatron_eval.json").write_text(json.dumps({"nproc": args.nproc, "repeats": args.repeats, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
