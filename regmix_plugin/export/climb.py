"""``--format climb``: NVIDIA's Nemotron-CLIMB mixture script (``mixtures/n<K>.sh``), written and read.

The layout is the one NeMo Curator's tutorial (``tutorials/text/nemotron-climb-data-curation``) writes in
``5_mixture.py`` and ``8_predict.py`` and ``6_train.sh`` runs::

    #!/bin/bash
    cat <<EOF
    0.41 /data/domains/cluster_3
    0.59 /data/domains/cluster_7
    EOF

``6_train.sh`` runs the script with bash, splits its output on whitespace and passes the words as
``--train-data-path``: so each line is one ``weight prefix`` pair (a Megatron data prefix, no ``.bin``), zero
weights are left out, and a prefix may not contain whitespace. CLIMB names a domain by its prefix's file
stem (``8_predict.py``: ``domain_name.split("/")[-1]``); :func:`read_mixture_sh` does the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture, MixtureError


def render(pairs: list[tuple[float, str]]) -> str:
    """The script's text for ``(weight, prefix)`` pairs (zero weights left out)."""
    lines = ["#!/bin/bash", "cat <<EOF"]
    lines += [f"{w:.10g} {p}" for w, p in pairs if w > 0]
    return "\n".join(lines + ["EOF"]) + "\n"


@register("climb")
def climb(mix: Mixture, base_dir: str | None = None) -> str:
    args = data_path_args(mix, "train", base_dir)
    pairs = [(float(args[i]), args[i + 1]) for i in range(0, len(args), 2)]
    spaced = next((p for _, p in pairs if any(c.isspace() for c in p)), None)
    if spaced is not None:
        raise MixtureError(f"--format climb: prefix {spaced!r} contains whitespace, and CLIMB's 6_train.sh splits the "
                           "script's output on whitespace; move the data or use --format megatron-args")
    return render(pairs)


@dataclass
class ClimbMixture:
    """One ``n<K>.sh``: weight per domain (the prefix's file stem) and the prefix it names."""

    weights: dict[str, float]
    prefixes: dict[str, str]


def read_mixture_sh(path: str | Path) -> ClimbMixture:
    """Weights per domain from a CLIMB mixture script; bad input is one line naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MixtureError(f"{path}: cannot read the CLIMB mixture script ({e.__class__.__name__})") from None
    weights: dict[str, float] = {}
    prefixes: dict[str, str] = {}
    inside = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not inside:
            inside = line.startswith("cat") and "<<" in line and "EOF" in line
            continue
        if line == "EOF":
            inside = False
            continue
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise MixtureError(f"{path} line {n}: {line!r} is not a 'weight prefix' pair; CLIMB writes one per line")
        try:
            w = float(parts[0])
        except ValueError:
            raise MixtureError(f"{path} line {n}: weight {parts[0]!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise MixtureError(f"{path} line {n}: weight {parts[0]!r} must be a finite number >= 0")
        prefix = parts[1].removesuffix(".bin")
        domain = prefix.rstrip("/").split("/")[-1]
        if domain in weights:
            raise MixtureError(f"{path} line {n}: domain {domain!r} appears twice ({prefixes[domain]} and {prefix}); "
                               "CLIMB names a domain by its file stem, so stems must differ")
        weights[domain], prefixes[domain] = w, prefix
    if not weights:
        raise MixtureError(f"{path}: no 'weight prefix' lines between 'cat <<EOF' and 'EOF'; is this a CLIMB mixture "
                           "script (mixtures/n<K>.sh)?")
    return ClimbMixture(weights, prefixes)
