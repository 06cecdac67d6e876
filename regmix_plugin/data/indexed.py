"""Read token and document counts from Megatron ``.idx`` files (ours or Megatron-LM preprocess_data.py's)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from regmix_plugin.errors import RegmixError


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
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    check_prefix(prefix, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not determine rank" outside torch.distributed
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
