"""A random subset of a Megatron ``.bin``/``.idx`` prefix's documents, written as a new prefix.

Used by repetition-matched proxies (:mod:`regmix_plugin.synthesize.repetition`): a proxy that reads ``1/k`` of
the target run's tokens is trained on ``1/k`` of a small domain's documents, so that it repeats the domain
as often as the target run will. The subset is chosen by a seeded permutation of whole documents (never
a contiguous range: corpora are often sorted, e.g. a dictionary by headword), taken until its tokens are
closest to the requested share, and written in the source's order with megatron-core's
``IndexedDatasetBuilder``, so every reader (megatron-core's GPTDataset, Megatron-LM) takes it as it takes
the source. Multi-sequence documents (Megatron-LM's ``--split-sentences``) stay whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from regmix_plugin.data.indexed import open_indexed, quiet_megatron
from regmix_plugin.errors import ConfigError


@dataclass(frozen=True)
class SubsampleStats:
    source: str
    out: str
    documents: int  # documents in the source
    tokens: int  # tokens in the source
    kept_documents: int
    kept_tokens: int


def stable_seed(*parts: object) -> int:
    """A seed from any parts (a study seed, a domain name, a prefix index), the same in every process."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def choose_documents(doc_tokens: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a random set of documents whose tokens come closest to ``fraction`` of the total
    (at least one document, all of them at ``fraction >= 1``)."""
    n = len(doc_tokens)
    if not 0 < fraction:
        raise ConfigError(f"fraction: {fraction!r} must be > 0")
    if fraction >= 1 or n <= 1:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    cum = np.cumsum(doc_tokens[order], dtype=np.int64)
    want = fraction * float(cum[-1])
    i = int(np.searchsorted(cum, want, side="left"))  # first prefix of the permutation reaching `want`
    k = i + 1 if i == 0 or cum[i] - want <= want - cum[i - 1] else i
    return np.sort(order[: max(1, min(k, n))])


def subsample_documents(prefix: str, out_prefix: str, fraction: float, seed: int,
                        where: str = "prefix") -> SubsampleStats:
    """Write ``out_prefix.bin``/``.idx`` holding a random ``fraction`` (by tokens) of ``prefix``'s documents.

    The caller makes the write atomic (e.g. writes into a temporary folder and renames it).
    """
    ds = open_indexed(prefix, where, mmap=False)
    lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
    doc_idx = np.asarray(ds.document_indices, dtype=np.int64)  # sequence boundaries, n_docs + 1 entries
    dtype = np.dtype(ds.index.dtype)
    starts = np.concatenate([[0], np.cumsum(lengths)])  # token offset of each sequence
    doc_tokens = starts[doc_idx[1:]] - starts[doc_idx[:-1]]
    keep = choose_documents(doc_tokens, fraction, seed)
    with quiet_megatron():
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    data = np.memmap(prefix + ".bin", dtype=dtype, mode="r") if starts[-1] else np.zeros(0, dtype=dtype)
    builder = IndexedDatasetBuilder(out_prefix + ".bin", dtype=dtype.type)
    for d in keep:
        s0, s1 = doc_idx[d], doc_idx[d + 1]
        builder.add_document(np.asarray(data[starts[s0]:starts[s1]]), lengths[s0:s1].tolist())
    builder.finalize(out_prefix + ".idx")
    del data
    return SubsampleStats(prefix, out_prefix, int(len(doc_tokens)), int(starts[-1]), int(len(keep)),
                          int(doc_tokens[keep].sum()))
