#!/usr/bin/env python
"""Corpus build throughput and dataset-builder time, on synthetic text in a temp folder.

* ``corpus``: ``build_corpus`` over ``--mb`` MiB of text in 4 domains (one document per paragraph), with the
  byte tokenizer and with a small HuggingFace BPE tokenizer trained on the fly; MiB/s and tokens/s.
* ``blend``: ``build_datasets`` for 10 and 100 domains (``--samples`` train samples of 512 tokens, 16 valid
  samples per domain): a cold build (private temp cache), a cold build into a cache dir, and a warm build
  that reads that cache; the median of ``--repeats``.

    .venv/bin/python bench/data.py --out bench_out/data
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from regmix_plugin.data.blend import BlendConfig, build_datasets
from regmix_plugin.data.corpus import CorpusConfig, Documents, build_corpus
from regmix_plugin.data.indexed import quiet_megatron
from regmix_plugin.mixture import Mixture

WORDS = [w for w in "the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will can more "
         "data model token weight mixture domain regression proxy train loss valid corpus".split()]


def paragraphs(seed: int, mib: float) -> list[str]:
    rng = random.Random(seed)
    out, size = [], 0
    while size < mib * 2**20:
        p = " ".join(rng.choices(WORDS, k=rng.randint(20, 200))) + "."
        out.append(p)
        size += len(p) + 2
    return out


def train_bpe(path: Path, sample: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sample, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<|endoftext|>"],
                                                        show_progress=False))
    tok.save(str(path))
    return path


def bench_corpus(tmp: Path, mib: float) -> list[dict]:
    domains = {f"d{k}": paragraphs(k, mib / 4) for k in range(4)}
    total = sum(len(p.encode()) for ps in domains.values() for p in ps) / 2**20
    tj = train_bpe(tmp / "tokenizer.json", domains["d0"][:2000])
    rows = []
    for name, spec in (("byte", "byte"), ("hf bpe 2k", str(tj))):
        t = time.perf_counter()
        doc = build_corpus(tmp / f"corpus-{name.split()[0]}", {n: Documents(ps) for n, ps in domains.items()},
                           CorpusConfig(tokenizer=spec, progress=False))
        dt = time.perf_counter() - t
        tokens = sum(d["tokens"] + d["valid_tokens"] for d in doc["domains"].values())
        rows.append({"tokenizer": name, "MiB": round(total, 1), "seconds": round(dt, 2),
                     "MiB/s": round(total / dt, 2), "Mtokens/s": round(tokens / dt / 1e6, 2)})
    return rows


def bench_blend(tmp: Path, n_domains: int, samples: int, repeats: int) -> dict:
    rng = np.random.default_rng(n_domains)
    docs = {f"d{k:03d}": paragraphs(1000 + k, 0.05) for k in range(n_domains)}
    out = tmp / f"blend{n_domains}"
    build_corpus(out, {n: Documents(ps) for n, ps in docs.items()}, CorpusConfig(progress=False))
    base = Mixture.load(out / "natural.json")
    mix = Mixture.from_weights(dict(zip(base.names, rng.dirichlet(np.ones(n_domains)))), template=base)

    def timed(cache_dir):
        t = time.perf_counter()
        build_datasets(mix, BlendConfig(seq_length=512, train_samples=samples, valid_samples_per_domain=16,
                                        cache_dir=cache_dir))
        return time.perf_counter() - t

    cold = statistics.median(timed(None) for _ in range(repeats))
    cold_cache, warm = [], []
    for r in range(repeats):
        cache = str(tmp / f"cache{n_domains}-{r}")
        cold_cache.append(timed(cache))
        warm.append(timed(cache))
    return {"domains": n_domains, "train_samples": samples, "cold_s": round(cold, 3),
            "cold_into_cache_s": round(statistics.median(cold_cache), 3), "warm_cache_s": round(statistics.median(warm), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--mb", type=float, default=16.0, help="MiB of text for the corpus benchmark")
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with quiet_megatron():
        import megatron.core.datasets.indexed_dataset  # noqa: F401  (import time is not build time)

    with tempfile.TemporaryDirectory() as tmp:
        corpus_rows = bench_corpus(Path(tmp), args.mb)
        blend_rows = [bench_blend(Path(tmp), d, args.samples, args.repeats) for d in (10, 100)]

    print("| tokenizer | MiB | seconds | MiB/s | Mtokens/s |\n|---|---|---|---|---|")
    for r in corpus_rows:
        print(f"| {r['tokenizer']} | {r['MiB']} | {r['seconds']} | {r['MiB/s']} | {r['Mtokens/s']} |")
    print("\n| domains | train samples | cold (s) | cold into cache (s) | warm cache (s) |\n|---|---|---|---|---|")
    for r in blend_rows:
        print(f"| {r['domains']} | {r['train_samples']:,} | {r['cold_s']} | {r['cold_into_cache_s']} | {r['warm_cache_s']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps({"corpus": corpus_rows, "blend": blend_rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
