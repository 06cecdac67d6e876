"""Small helpers shared by synthesis, the sweep and collection: token counts and moving mixture files."""

from __future__ import annotations

import struct

import numpy as np

from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Mixture

# Megatron's IndexedDataset .idx header: magic, version <Q, dtype code <B, sequence count <Q,
# document count <Q, then int32 sequence lengths (one per sequence, in tokens).
_IDX_MAGIC = b"MMIDIDX\x00\x00"
_IDX_HEADER = len(_IDX_MAGIC) + 8 + 1 + 8 + 8


def idx_token_count(prefix: str) -> int:
    """Number of tokens in a Megatron ``PREFIX.idx``/``.bin`` pair, read from the index header only."""
    path = f"{prefix}.idx"
    try:
        with open(path, "rb") as f:
            head = f.read(_IDX_HEADER)
    except FileNotFoundError:
        raise RegmixError(f"{path}: not found; build the domain with `regmix corpus build` or give tokens") from None
    if len(head) < _IDX_HEADER or not head.startswith(_IDX_MAGIC):
        raise RegmixError(f"{path}: not a Megatron IndexedDataset index (bad magic); rebuild it")
    (n_seq,) = struct.unpack("<Q", head[len(_IDX_MAGIC) + 9:len(_IDX_MAGIC) + 17])
    lengths = np.memmap(path, dtype=np.int32, mode="r", offset=_IDX_HEADER, shape=(n_seq,))
    return int(lengths.sum(dtype=np.int64))


def domain_token_counts(mix: Mixture, source: str) -> dict[str, int]:
    """Training-token counts per domain: from the mixture's ``tokens`` fields or from the ``.idx`` files.

    ``source`` is ``tokens`` (the mixture file must carry them), ``idx`` (read every prefix's index) or
    ``auto`` (``tokens`` where present for every domain, else ``idx``).
    """
    if source == "auto":
        source = "tokens" if all(d.tokens is not None for d in mix.domains) else "idx"
    if source == "tokens":
        missing = [d.name for d in mix.domains if d.tokens is None]
        if missing:
            raise RegmixError(
                f"domains.{missing[0]}.tokens: missing in the base mixture; set prior: idx to read the .idx files"
            )
        return {d.name: int(d.tokens) for d in mix.domains}
    return {d.name: sum(idx_token_count(mix.resolve(p)) for p in d.prefixes) for d in mix.domains}

