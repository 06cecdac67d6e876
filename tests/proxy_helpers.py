"""Tiny real corpora and runs for the proxy, Megatron, metrics, schedule and DALI tests.

The corpus follows the `regmix corpus build` layout (DIR/<domain>/train|valid.bin/.idx, corpus.json) and is
written with megatron-core's own IndexedDatasetBuilder; each domain draws its byte tokens from its own
distribution, so per-domain losses really differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from regmix_plugin.mixture import Mixture

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "megatron_configs" / "proxy-tiny-cpu.yaml"
VOCAB, EOD = 257, 256

# Small enough for ~1 s runs: 2 layers of width 32, 12 steps of 4 x 32 tokens.
TEST_OVERRIDES = [
    "model.hidden_size=32", "model.ffn_hidden_size=64", "model.num_attention_heads=2", "model.seq_length=32",
    "train.steps=12", "train.global_batch_size=4", "train.micro_batch_size=4", "train.log_every=2",
    "train.progress=false", "train.threads=1", "eval.every=6", "eval.samples_per_domain=6", "eval.batch_size=4",
    "optim.warmup_steps=2", "metrics.tensorboard=true",
]


def _write_prefix(prefix: Path, docs: list[np.ndarray]) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    for d in docs:
        builder.add_document(torch.from_numpy(d.astype(np.int64)), [len(d)])
    builder.finalize(str(prefix) + ".idx")


def make_corpus(root: Path, domains: tuple[str, ...] = ("web", "code", "books"), docs: int = 40,
                seed: int = 0) -> Path:
    """Write a tiny corpus and its natural.json; returns natural.json's path."""
    rng = np.random.default_rng(seed)
    info = {}
    for k, name in enumerate(domains):
        # Domain k favours its own band of 40 byte values, so each domain has its own unigram statistics.
        probs = np.full(256, 0.2 / 216)
        probs[40 * k: 40 * k + 40] = 0.8 / 40
        probs /= probs.sum()
        for split, n in (("train", docs), ("valid", max(docs // 4, 4))):
            lens = rng.integers(20, 90, size=n)
            arrays = [np.append(rng.choice(256, size=int(L), p=probs), EOD) for L in lens]
            _write_prefix(root / name / split, arrays)
            info.setdefault(name, {})[f"{split}_tokens"] = int(sum(len(a) for a in arrays))
    corpus = {
        "version": 1,
        "tokenizer": {"type": "byte", "name": "byte", "vocab_size": VOCAB, "eod": EOD},
        "domains": {
            n: {"prefix": f"{n}/train", "valid_prefix": f"{n}/valid", "tokens": v["train_tokens"],
                "valid_tokens": v["valid_tokens"]}
            for n, v in info.items()
        },
    }
    (root / "corpus.json").write_text(json.dumps(corpus, indent=2))
    mix = Mixture.from_dict({
        "version": 1, "name": "natural",
        "domains": [{"name": n, "weight": info[n]["train_tokens"], "prefixes": [f"{n}/train"],
                     "valid_prefixes": [f"{n}/valid"], "tokens": info[n]["train_tokens"]} for n in domains],
    })
    return mix.save(root / "natural.json")


def write_mixture(root: Path, name: str, weights: dict[str, float]) -> Path:
    """A mixture over the corpus in ``root`` with the given weights (domains absent from ``weights`` get 0)."""
    natural = Mixture.load(root / "natural.json")
    w = {n: weights.get(n, 0.0) for n in natural.names}
    mix = Mixture.from_weights(w, template=natural, name=name)
    return mix.save(root / f"{name}.json")


def run_cli(args: list[str], nproc: int = 1, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`regmix <args>` in a subprocess; with nproc > 1 under torchrun (gloo, one thread per rank)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "regmix_plugin", *args]
    else:
        cmd = [sys.executable, "-m", "regmix_plugin", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def train_args(mixture: Path, run_dir: Path, *extra: str) -> list[str]:
    args = ["train", "--mixture", str(mixture), "--config", str(TINY_CONFIG), "--run-dir", str(run_dir)]
    for o in TEST_OVERRIDES:
        args += ["--set", o]
    return args + list(extra)
