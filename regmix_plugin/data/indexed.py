"""Read token and document counts from Megatron ``.idx`` files (ours or Megatron-LM preprocess_data.py's)."""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from regmix_plugin.errors import RegmixError


@contextlib.contextmanager
def quiet_megatron() -> Iterator[None]:
    """Import or call megatron-core without its CPU-machine noise on stderr.

    Importing megatron.core warns that Transformer Engine, apex and a CUDA runtime are missing, and its
    dataset code warns on each log call that no torch.distributed rank is known; on a CPU machine all of
    that is expected, and it would bury the one-line errors of our CLI.
    """
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch_log.setLevel(level)


@dataclass(frozen=True)
class IndexStats:
    """Counts of one IndexedDataset prefix, read from its ``.idx`` file alone."""

    prefix: str
    tokens: int
    documents: int
    sequences: int
    dtype: str
    bin_bytes: int


def strip_extension(path: str) -> str:
    """``x.bin``/``x.idx`` -> ``x``: users often paste a file name where a prefix is meant."""
    return path[:-4] if path.endswith((".bin", ".idx")) else path


def check_prefix(prefix: str, where: str = "prefix") -> None:
    for ext in (".bin", ".idx"):
        if not os.path.isfile(prefix + ext):
            raise RegmixError(
                f"{where}: {prefix}{ext} does not exist; build it with `regmix corpus build` or Megatron's "
                "preprocess_data.py, or fix the prefix"
            )


# The .idx header as megatron-core writes it: magic, version (u64), dtype code (u8), sequences, documents (u64),
# then int32 sequence lengths (one per sequence, in tokens). This module is its one reader.
_IDX_MAGIC = b"MMIDIDX\x00\x00"
_IDX_HEADER = struct.Struct("<9sQBQQ")
_DTYPE_CODES = range(1, 9)


def read_index_header(path: str) -> tuple[int, int, int, int] | None:
    """``(version, dtype code, sequences, documents)`` of an ``.idx`` file; None when it has no MMIDIDX header.
    FileNotFoundError propagates: callers word it for their flag."""
    with open(path, "rb") as f:
        head = f.read(_IDX_HEADER.size)
    if len(head) < _IDX_HEADER.size or head[:9] != _IDX_MAGIC:
        return None
    _, version, code, seqs, docs = _IDX_HEADER.unpack(head)
    return version, code, seqs, docs


def idx_token_count(prefix: str) -> int:
    """Number of tokens in a Megatron ``PREFIX.idx``/``.bin`` pair, read from the index header only.

    No megatron-core import (DECISIONS 8): `regmix synthesize` and the optimiser's token caps only sum lengths.
    """
    path = f"{prefix}.idx"
    try:
        header = read_index_header(path)
    except FileNotFoundError:
        raise RegmixError(f"{path}: not found; build the domain with `regmix corpus build` or give tokens") from None
    if header is None:
        raise RegmixError(f"{path}: not a Megatron IndexedDataset index (bad magic); rebuild it")
    lengths = np.memmap(path, dtype=np.int32, mode="r", offset=_IDX_HEADER.size, shape=(header[2],))
    return int(lengths.sum(dtype=np.int64))


def _check_index_file(prefix: str, where: str) -> None:
    """Refuse a damaged .idx before megatron-core reads it: its asserts and half-built readers are noisy."""
    path = prefix + ".idx"
    size = os.path.getsize(path)
    header = read_index_header(path)
    problem = None
    if header is None:
        problem = "no MMIDIDX header"
    else:
        version, code, seqs, docs = header
        body = _IDX_HEADER.size + seqs * (4 + 8) + docs * 8  # lengths int32, pointers int64, doc indices int64
        if version != 1 or code not in _DTYPE_CODES:
            problem = f"version {version}, dtype code {code}"
        elif size not in (body, body + seqs):  # + one mode byte per sequence in multimodal indexes
            problem = f"{size} bytes where its counts need {body}; truncated?"
    if problem:
        raise RegmixError(f"{where}: {path} is not a Megatron IndexedDataset index ({problem}); rebuild it")


def open_indexed(prefix: str, where: str = "prefix", mmap: bool = True):
    """megatron-core's ``IndexedDataset`` for ``prefix``, with one-line errors instead of its asserts.

    ``mmap=False`` reads the ``.bin`` through a file pointer, which also works for an empty ``.bin``
    (a domain without held-out documents), where mmap fails.
    """
    check_prefix(prefix, where)
    _check_index_file(prefix, where)
    with quiet_megatron():
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        return IndexedDataset(prefix, mmap=mmap)


def index_stats(prefix: str, where: str = "prefix") -> IndexStats:
    ds = open_indexed(prefix, where, mmap=False)
    lengths = ds.sequence_lengths
    tokens = int(np.sum(lengths, dtype=np.int64))
    bin_bytes = os.path.getsize(prefix + ".bin")
    itemsize = np.dtype(ds.index.dtype).itemsize
    if bin_bytes != tokens * itemsize:
        raise RegmixError(
            f"{where}: {prefix}.bin has {bin_bytes} bytes but its .idx lists {tokens} tokens of {itemsize} bytes; "
            "the pair is damaged or mismatched, rebuild it"
        )
    return IndexStats(
        prefix=prefix,
        tokens=tokens,
        documents=int(len(ds.document_indices) - 1),
        sequences=int(len(lengths)),
        dtype=np.dtype(ds.index.dtype).name,
        bin_bytes=bin_bytes,
    )
