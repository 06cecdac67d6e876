"""Token counts per domain come from one reader of the .idx header, for synthesis and the optimiser alike."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np


def _write_idx(path, lengths) -> None:
    # A real Megatron index header: magic, version, dtype code, sequence count, document count, lengths.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8))
        f.write(struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(lengths) + 1))
        f.write(np.array(lengths, dtype=np.int32).tobytes())


def test_the_optimiser_counts_tokens_from_the_header_without_megatron(tmp_path):
    _write_idx(tmp_path / "a" / "train.idx", [5, 7, 9])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train.idx").write_bytes(b"not an index")
    doc = {"version": 1, "domains": [{"name": "a", "weight": 1, "prefixes": ["a/train"]},
                                     {"name": "b", "weight": 1, "prefixes": ["b/train"]},
                                     {"name": "c", "weight": 1, "prefixes": ["c/train"], "tokens": 1000}]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    code = (
        "import json, sys; from regmix_plugin.mixture import Mixture; from regmix_plugin.optimize.run import domain_tokens; "
        f"print(json.dumps([domain_tokens(Mixture.load({str(tmp_path / 'm.json')!r})), 'megatron' in sys.modules]))"
    )
    counts, megatron = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                 check=True).stdout)
    # b's index is unreadable: left uncounted here (the constraint that needs it names it), as before.
    assert counts == {"a": 21.0, "c": 1000.0}
    assert megatron is False  # DECISIONS 8: counting tokens does not start megatron-core
