"""Proxy-trainer benchmarks on this machine's CPU.

1. Per-domain validation pass vs a plain validation pass over the same tokens (goal <= 1.05x).
2. Proxy training throughput (tokens/s) as a fraction of the measured fp32 matmul peak (goal >= 60%).
3. DALI (CPU pipeline) vs the torch DataLoader, reading the same micro batches.
4. The demo proxy's step with 4 vs 2 attention heads, and AdamW's update fused vs per tensor (ratios of
   interleaved pairs).

    .venv/bin/python bench/proxy.py --out bench_out [--repeats 5]

Timings are medians of interleaved repeats (other processes share the cores). Prints a markdown table and
writes proxy.json to --out.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from regmix_plugin.data.blend import BlendConfig, build_datasets
from regmix_plugin.data.corpus import CorpusConfig, build_corpus
from regmix_plugin.mixture import Mixture
from regmix_plugin.proxy import distributed
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.data import BatchLayout, ShardBatchSampler, StepBatchSampler, make_loader
from regmix_plugin.proxy.model import count_parameters
from regmix_plugin.proxy.trainer import Trainer
from regmix_plugin.schedule import Schedule

REPO = Path(__file__).resolve().parents[1]


def make_corpus(root: Path) -> Path:
    """Two real-text domains from the Python standard library: library modules and their tests."""
    lib = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")))
    tests = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_*.py")))
    build_corpus(root / "corpus", {"lib": lib[:150], "tests": tests[:150]}, CorpusConfig(progress=False, force=True))
    return root / "corpus" / "natural.json"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int = 1024, repeats: int = 7) -> float:
    """fp32 FLOP/s of a square matmul, the best this CPU does with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = median_time(lambda: [a @ b for _ in range(5)], repeats) / 5
    return 2 * n**3 / t


def flops_per_token(cfg: ProxyConfig, vocab: int, non_embedding: int) -> float:
    """Training FLOPs per token: 6 x (matmul parameters incl. the output layer) + attention scores/context."""
    m = cfg.model
    return 6 * (non_embedding + vocab * m.hidden_size) + 12 * m.num_layers * m.seq_length * m.hidden_size


def trainer_for(cfg: ProxyConfig, natural: Path, run_dir: Path) -> Trainer:
    env = distributed.setup("cpu")
    return Trainer(cfg, Schedule.single(natural), run_dir, env)


def bench_training(natural: Path, tmp: Path, config: str, overrides: list[str], repeats: int) -> dict:
    """Step time, and its fraction of the matmul peak measured right before it (a ratio per pair, then the median:
    other processes on the machine slow both sides of a pair alike)."""
    cfg = ProxyConfig.load(REPO / "megatron_configs" / config, overrides)
    trainer = trainer_for(cfg, natural, tmp / f"train-{config}")
    try:
        batches = list(make_loader(trainer.datasets[0].train, StepBatchSampler(trainer.layout, 0, 1), 0))
        for _ in range(3):
            trainer._train_step(batches)
        params = count_parameters(trainer.model)
        tokens = cfg.train.global_batch_size * cfg.model.seq_length
        fpt = flops_per_token(cfg, trainer.vocab_size, params["non_embedding_parameters"])
        steps, peaks, fractions = [], [], []
        for _ in range(repeats):
            peak = matmul_peak(repeats=3)
            step = median_time(lambda: trainer._train_step(batches), 1)
            steps.append(step)
            peaks.append(peak)
            fractions.append(tokens / step * fpt / peak)
        step = statistics.median(steps)
        return {"config": config, "overrides": overrides, "step_s": step, "tokens_per_s": tokens / step,
                "flops_per_token": fpt, "matmul_peak_gflops": statistics.median(peaks) / 1e9,
                "mfu": statistics.median(fractions), **params}
    finally:
        distributed.teardown()


def bench_demo_proxy(natural: Path, tmp: Path, repeats: int) -> dict:
    """The demo proxy's step time at 4 and 2 attention heads, alternating step by step, and the AdamW update
    alone, fused (what the trainer uses) vs torch's per-tensor default on CPU."""
    env = distributed.setup("cpu")
    trainers = {h: Trainer(ProxyConfig.load(REPO / "megatron_configs" / "demo-proxy-cpu.yaml",
                                            [f"model.num_attention_heads={h}"]),
                           Schedule.single(natural), tmp / f"demo-h{h}", env)
                for h in (4, 2)}
    try:
        batches = {h: list(make_loader(t.datasets[0].train, StepBatchSampler(t.layout, 0, 1), 0))
                   for h, t in trainers.items()}
        times: dict[int, list[float]] = {4: [], 2: []}
        for _ in range(3):
            for h, t in trainers.items():
                t._train_step(batches[h])
        for _ in range(repeats):
            for h, t in trainers.items():
                times[h].append(median_time(lambda: [t._train_step(batches[h]) for _ in range(10)], 1) / 10)
        params = trainers[2].params
        optimizers = {kind: torch.optim.AdamW(params, lr=1e-4, fused=kind == "fused") for kind in ("fused", "per_tensor")}
        opt_times: dict[str, list[float]] = {k: [] for k in optimizers}
        for _ in range(repeats):
            for kind, opt in optimizers.items():
                opt_times[kind].append(median_time(lambda: [opt.step() for _ in range(50)], 1) / 50)
    finally:
        distributed.teardown()
    return {"step_s": {h: statistics.median(v) for h, v in times.items()},
            "heads_ratio": statistics.median(a / b for a, b in zip(times[4], times[2])),
            "adamw_s": {k: statistics.median(v) for k, v in opt_times.items()},
            "adamw_ratio": statistics.median(a / b for a, b in zip(opt_times["per_tensor"], opt_times["fused"]))}


def plain_validation(trainer: Trainer) -> float:
    """What a trainer without per-domain metrics does: one token-weighted mean over the validation set."""
    trainer.model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    valid = trainer.datasets[0].valid_concat
    with torch.no_grad():
        for batch in make_loader(valid, ShardBatchSampler(len(valid), trainer.cfg.eval.batch_size, 1, 0), 0):
            loss, mask = trainer._forward(batch)
            total += (loss * mask).sum().double()
            count += mask.sum().double()
    return (total / count).item()


def bench_validation(natural: Path, tmp: Path, repeats: int) -> dict:
    cfg = ProxyConfig.load(REPO / "megatron_configs" / "proxy-1m.yaml",
                           ["model.seq_length=256", "eval.samples_per_domain=32", "eval.batch_size=16", "train.steps=10",
                            "train.global_batch_size=16"])
    trainer = trainer_for(cfg, natural, tmp / "valid")
    try:
        plain, per_domain, ratios = [], [], []
        for i in range(repeats):  # interleaved pairs, alternating order, so both see the same background load
            pair = {}
            for which in (("plain", "per_domain") if i % 2 == 0 else ("per_domain", "plain")):
                fn = (lambda: plain_validation(trainer)) if which == "plain" else trainer.evaluate
                pair[which] = median_time(fn, 1)
            plain.append(pair["plain"])
            per_domain.append(pair["per_domain"])
            ratios.append(pair["per_domain"] / pair["plain"])
        return {"plain_s": statistics.median(plain), "per_domain_s": statistics.median(per_domain),
                "ratio": statistics.median(ratios),
                "tokens": len(trainer.datasets[0].valid_concat) * cfg.model.seq_length}
    finally:
        distributed.teardown()


def bench_loaders(natural: Path, repeats: int) -> dict | None:
    try:
        from regmix_plugin.proxy.dali import DaliLoader
    except Exception:
        return None
    ds = build_datasets(Mixture.load(natural), BlendConfig(seq_length=512, train_samples=64 * 16)).train
    sampler = StepBatchSampler(BatchLayout(64, 16, 1, 0), 0, 16)
    torch_t, dali_t = [], []
    for _ in range(repeats):
        torch_t.append(median_time(lambda: list(make_loader(ds, sampler, 0)), 1))
        dali_t.append(median_time(lambda: list(DaliLoader(ds, sampler, 512)), 1))
    samples = len(ds)
    return {"samples": samples, "torch_s": statistics.median(torch_t), "dali_s": statistics.median(dali_t),
            "torch_samples_per_s": samples / statistics.median(torch_t),
            "dali_samples_per_s": samples / statistics.median(dali_t)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: see docs/proxy.md on busy machines)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        natural = make_corpus(tmp)
        training = [
            bench_training(natural, tmp, "proxy-tiny-cpu.yaml", [], args.repeats),
            bench_training(natural, tmp, "proxy-1m.yaml", ["model.seq_length=256", "train.global_batch_size=16",
                                                           "train.micro_batch_size=16"], args.repeats),
            bench_training(natural, tmp, "proxy-1m.yaml", ["model.hidden_size=512", "model.ffn_hidden_size=2048",
                                                           "model.seq_length=256", "train.global_batch_size=8",
                                                           "train.micro_batch_size=8"], args.repeats),
        ]
        validation = bench_validation(natural, tmp, args.repeats)
        demo = bench_demo_proxy(natural, tmp, args.repeats)
        loaders = bench_loaders(natural, args.repeats)
    result = {"threads": args.threads, "load_average": os.getloadavg(), "training": training,
              "validation": validation, "demo_proxy": demo, "loaders": loaders}
    (out / "proxy.json").write_text(json.dumps(result, indent=2) + "\n")

    load = os.getloadavg()[1]
    print(f"{args.threads} threads; 5-minute load average at the end: {load:.1f} (other processes share the cores)\n")
    print("| benchmark | result | goal |\n|---|---|---|")
    for t in training:
        name = f"{t['config']} ({t['non_embedding_parameters'] / 1e6:.2f}M non-emb, {' '.join(t['overrides'])})"
        print(f"| train step {name} | {t['step_s'] * 1e3:.1f} ms, {t['tokens_per_s']:.0f} tok/s, "
              f"{100 * t['mfu']:.1f}% of the fp32 matmul peak ({t['matmul_peak_gflops']:.1f} GFLOP/s) | >= 60% |")
    v = validation
    print(f"| per-domain vs plain validation ({v['tokens']} tokens) | {v['per_domain_s'] * 1e3:.0f} ms vs "
          f"{v['plain_s'] * 1e3:.0f} ms = {v['ratio']:.3f}x | <= 1.05x |")
    d = demo
    print(f"| demo proxy step, 4 vs 2 attention heads | {d['step_s'][4] * 1e3:.1f} vs {d['step_s'][2] * 1e3:.1f} ms = "
          f"{d['heads_ratio']:.2f}x | - |")
    print(f"| AdamW update of the demo proxy, per tensor vs fused | {d['adamw_s']['per_tensor'] * 1e3:.2f} vs "
          f"{d['adamw_s']['fused'] * 1e3:.2f} ms = {d['adamw_ratio']:.2f}x | - |")
    if loaders:
        print(f"| DALI (CPU) vs torch DataLoader, {loaders['samples']} x 512 tokens | "
              f"{loaders['dali_samples_per_s']:.0f} vs {loaders['torch_samples_per_s']:.0f} samples/s | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
