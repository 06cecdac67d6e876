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

Each launch evaluates after each of its 8 iterations and once more at the end; its first evaluation is
warm-up and is dropped, and the launch's median is kept. Launches alternate their order from one repeat to
the next. The table gives the median over launches, and the median over repeats of each path's ratio to the
``plain`` launch of the same repeat (launches made back to back, so a drift in the machine's load cancels).
Writes megatron_eval.json to --out.
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
        "--global-batch-size", str(8 * nproc), "--train-samples", str(64 * nproc), "--lr", "1e-3",
        "--tokenizer-type", "NullTokenizer", "--vocab-size", "257", "--distributed-backend", "gloo",
        "--data-mixture-from", str(corpus), "--eval-interval", "1", "--log-interval", "100",
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
        per_launch: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.repeats):
            # Alternate the order, so that a drift in the machine's load does not favour one path.
            for m in (modes if r % 2 == 0 else modes[::-1]):
                times = tmp / f"{m}-{r}.jsonl"
                launch(m, args.nproc, corpus, tmp / f"run{r}", times)
                recs = [json.loads(x)["seconds"] for x in times.read_text().splitlines()]
                per_launch[m].append(statistics.median(recs[1:]))  # the first evaluation is warm-up
                print(f"repeat {r + 1}/{args.repeats} {m}: {len(recs)} evaluations, median {per_launch[m][-1]:.3f} s",
                      file=sys.stderr, flush=True)
    result = {}
    for m in modes:
        # Ratios of launches made back to back (same repeat), then the median over repeats.
        ratios = [a / b for a, b in zip(per_launch[m], per_launch["plain"])]
        result[m] = {"median_s": statistics.median(per_launch[m]), "ratio_to_plain": statistics.median(ratios),
                     "ratios": ratios, "launch_medians_s": per_launch[m]}
    lines = ["| validation path | s per evaluation (median) | vs plain (median of paired ratios) | launches |",
             "|---|---|---|---|"]
    for m in modes:
        lines.append(f"| {m} | {result[m]['median_s']:.3f} | {result[m]['ratio_to_plain']:.2f}x | {args.repeats} |")
    table = "\n".join(lines)
    print(f"Megatron evaluation, {len(DOMAINS)} domains x 32 validation sequences of 64 tokens, DP={args.nproc}\n")
    print(table)
    (out / "megatron_eval.json").write_text(json.dumps({"nproc": args.nproc, "repeats": args.repeats, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
