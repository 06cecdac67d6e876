"""Read token and document counts from Megatron ``.idx`` files (ours or Megatron-LM preprocess_data.py's)."""

from __future__ import annotations

import contextlib
import logging
import os
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


def open_indexed(prefix: str, where: str = "prefix"):
    """megatron-core's ``IndexedDataset`` for ``prefix``, with a one-line error instead of its asserts."""
    check_prefix(prefix, where)
    try:
        with quiet_megatron():
            from megatron.core.datasets.indexed_dataset import IndexedDataset

            return IndexedDataset(prefix)
    except (AssertionError, ValueError, OSError, KeyError) as e:
        raise RegmixError(f"{where}: {prefix}.idx is not a Megatron IndexedDataset index ({e or type(e).__name__}); rebuild it") from None


def index_stats(prefix: str, where: str = "prefix") -> IndexStats:
    ds = open_indexed(prefix, where)
    lengths = ds.sequence_lengths
    return IndexStats(
        prefix=prefix,
        tokens=int(np.sum(lengths, dtype=np.int64)),
        documents=int(len(ds.document_indices) - 1),
        sequences=int(len(lengths)),
        dtype=np.dtype(ds.index.dtype).name,
        bin_bytes=os.path.getsize(prefix + ".bin"),
    )
