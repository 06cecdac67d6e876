"""What one per-domain evaluation costs in Megatron-LM's real training loop (CPU, gloo), side by side.

    .venv/bin/python bench/megatron_eval.py --out bench_out/megatron_eval [--repeats 3] [--nproc 1]

Runs Megatron's ``pretrain()`` (through bench/megatron_eval_runner.py, with the CPU patches of
tests/megatron_cpu) on a tiny GPT and a 4-domain corpus, and times every whole evaluation
(``evaluate_and_print_results``: forward passes, reductions, the plugin's collective and writes):

* ``plugin`` vs ``plain``, in the same launch: evaluations alternate between the plugin's per-domain path and
  Megatron's plain ``lm loss`` over the same fixed validation set (goal: at most 1.05x);
* ``native``: megatron-core 0.19's per-dataset validation (``--multiple-validation-sets --full-validation
  --validation-set-names``) with the run's evaluation batch sizes, against a ``plain`` launch made next to it;
* ``native-mb1``: the same with ``--eval-micro-batch-size 1 --eval-global-batch-size <dp>``, the only setting
  where it reads each sample once (its sampler always yields one sample per rank).

The paired launch evaluates after each of its 40 iterations: the plugin's ratio is the median, over all
repeats, of the ratios of neighbouring evaluations (plugin, then plain), the first pair dropped as warm-up;
it is given by wall time and by the rank's CPU time (other processes' load disturbs the latter far less).
The other launches evaluate after each of 8 iterations; each path's first evaluation is warm-up, the launch's
median is kept, and the native paths' ratios are to the ``plain`` launch of the same repeat. The launches of a
repeat run back to back, in alternating order from one repeat to the next (the machine is shared, so only
side-by-side ratios mean much).
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


def launch(mode: str, nproc: int, corpus: Path, work: Path, times: Path) -> list[dict]:
    names = ["--validation-set-names", *DOMAINS]
    extra = {
        "paired": [],
        "plain": ["--no-regmix-per-domain-eval"],
        "native": ["--multiple-validation-sets", "--full-validation", *names],
        "native-mb1": ["--multiple-validation-sets", "--full-validation", *names,
                       "--eval-micro-batch-size", "1", "--eval-global-batch-size", str(nproc)],
    }[mode]
    flags = [
        "--num-layers", "2", "--hidden-size", "128", "--ffn-hidden-size", "256", "--num-attention-heads", "4",
        "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "4",
        # The paired launch makes many evaluations (its ratios are taken pair by pair); the others need a few.
        "--global-batch-size", str(8 * nproc), "--train-samples", str((320 if mode == "paired" else 64) * nproc),
        "--lr", "1e-3",
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
    return [json.loads(x) for x in times.read_text().splitlines()]


def _median_after_warmup(recs: list[dict], mode: str) -> float:
    seconds = [r["seconds"] for r in recs if r["mode"] == mode]
    return statistics.median(seconds[1:])  # each path's first evaluation is warm-up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench_out/megatron_eval")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=1, help="data-parallel ranks")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    launches = ("paired", "plain", "native", "native-mb1")
    seconds: dict[str, list[float]] = {m: [] for m in ("plugin", "plain (same launch)", *launches[1:])}
    ratios: dict[str, list[float]] = {m: [] for m in ("plugin", "native", "native-mb1")}
    cpu_ratios: list[float] = []  # the plugin's, by this process's CPU time
    with tempfile.TemporaryDirectory(prefix="regmix-bench-eval-") as tmp:
        tmp = Path(tmp)
        corpus = make_corpus(tmp / "corpus")
        for r in range(args.repeats):
            # Alternate the launch order, so that a drift in the machine's load favours no path.
            for m in (launches if r % 2 == 0 else launches[::-1]):
                recs = launch(m, args.nproc, corpus, tmp / f"run{r}", tmp / f"{m}-{r}.jsonl")
                if m == "paired":
                    seconds["plugin"].append(_median_after_warmup(recs, "plugin"))
                    seconds["plain (same launch)"].append(_median_after_warmup(recs, "plain"))
                    # Evaluations alternate plugin, plain, plugin, ...: each neighbouring pair gives one ratio,
                    # which cancels the machine's load drift better than the launch's medians do.
                    pairs = [(a, b) for a, b in zip(recs[2::2], recs[3::2]) if b["mode"] == "plain"]
                    ratios["plugin"] += [a["seconds"] / b["seconds"] for a, b in pairs]
                    cpu_ratios += [a["cpu_seconds"] / b["cpu_seconds"] for a, b in pairs]
                else:
                    seconds[m].append(_median_after_warmup(recs, m.split("-")[0]))
                print(f"repeat {r + 1}/{args.repeats} {m}: {len(recs)} evaluations", file=sys.stderr, flush=True)
            for m in ("native", "native-mb1"):
                ratios[m].append(seconds[m][-1] / seconds["plain"][-1])
    result = {m: {"median_s": statistics.median(v), "launch_medians_s": v} for m, v in seconds.items()}
    for m, v in ratios.items():
        result[m].update(ratio_to_plain=statistics.median(v), ratios=v)
    result["plugin"].update(cpu_ratio_to_plain=statistics.median(cpu_ratios), cpu_ratios=cpu_ratios)
    lines = ["| validation path | s per evaluation (median) | vs plain (median ratio) |", "|---|---|---|"]
    for m, label, plain in (("plugin", "plugin: per-domain losses", "plain, same launch"),
                            ("native", "megatron-core --multiple-validation-sets --full-validation", "plain launch"),
                            ("native-mb1", "the same, --eval-micro-batch-size 1", "plain launch")):
        lines.append(f"| {label} | {result[m]['median_s']:.3f} | {result[m]['ratio_to_plain']:.3f}x ({plain}, "
                     f"{len(result[m]['ratios'])} ratios) |")
    lines.append(f"| plain: lm loss only, same fixed validation set | {result['plain']['median_s']:.3f} | 1.00x |")
    lines.append(f"\nThe plugin's ratio by the rank's CPU time instead of wall time: "
                 f"{result['plugin']['cpu_ratio_to_plain']:.3f}x ({len(cpu_ratios)} pairs).")
    print(f"Megatron evaluation, {len(DOMAINS)} domains x 32 validation sequences of 64 tokens, DP={args.nproc}, "
          f"{args.repeats} repeats\n")
    print("\n".join(lines))
    (out / "megatron_eval.json").write_text(json.dumps({"nproc": args.nproc, "repeats": args.repeats, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
