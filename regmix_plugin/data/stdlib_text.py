"""Real text that every Python install carries, for the scaling and continual-training example, tests and
benchmark: no Debian package or download needed.

- ``prose``: the English reference documentation in ``pydoc_data.topics`` (what ``help("if")`` shows);
- ``code``: the source files of the standard library.

Two more kinds, for benchmarks that need more text or sets a run never trains on (bench/nested.py trains
on code and changelogs and evaluates on all four): ``licenses``, the license texts every Debian system
carries in /usr/share/common-licenses (package base-files), and ``changelogs``, the packages'
changelog.Debian.gz files under /usr/share/doc.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

KINDS = ("prose", "code")
EVAL_KINDS = ("licenses", "changelogs")
MAX_DOC_CHARS = 4000  # many short documents rather than a few long ones: a finer held-out split


def _texts(kind: str) -> Iterator[str]:
    if kind == "prose":
        from pydoc_data.topics import topics

        return (topics[k] for k in sorted(topics))
    if kind == "licenses":
        files = sorted(p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file())
        # Few, long files: cut into documents of MAX_DOC_CHARS so that the held-out split is not one license.
        return (t[i:i + MAX_DOC_CHARS] for p in files for t in [p.read_text(encoding="utf-8", errors="replace")]
                for i in range(0, len(t), MAX_DOC_CHARS))
    if kind == "changelogs":
        import gzip

        files = sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz"))
        return (gzip.open(p, "rt", encoding="utf-8", errors="replace").read() for p in files)
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if p.stat().st_size < 60_000)
    return (p.read_text(encoding="utf-8", errors="replace") for p in files)


def documents(kind: str, max_chars: int, whole: bool = False) -> list[str]:
    """Documents of ``kind`` in a fixed order, up to about ``max_chars`` characters. A text longer than
    MAX_DOC_CHARS is cut to its start, or with ``whole`` into pieces of that size (all of it is used)."""
    from regmix_plugin.errors import check_choice

    check_choice("kind", kind, KINDS + EVAL_KINDS)
    texts = _texts(kind)
    if whole:
        texts = (t[i:i + MAX_DOC_CHARS] for t in texts for i in range(0, len(t), MAX_DOC_CHARS))
    return _capped(texts, max_chars)


def _capped(texts: Iterable[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for t in texts:
        t = t.strip()[:MAX_DOC_CHARS]
        if len(t) < 40:
            continue
        out.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return out


def build_text_corpus(out: str | os.PathLike, max_chars: int = 150_000, kinds: Iterable[str] = KINDS,
                      whole: bool = False) -> Path:
    """A byte-tokenized corpus with a domain per kind (default prose and code) under ``out``; returns its
    natural.json. ``whole``: see :func:`documents`."""
    from regmix_plugin.data.corpus import NATURAL_FILE, CorpusConfig, Documents, build_corpus

    out = Path(out)
    kinds = list(kinds)
    missing = [k for k in kinds if not documents(k, 1)]
    if missing:
        from regmix_plugin.errors import RegmixError

        raise RegmixError(f"kinds: no text found for {', '.join(missing)} on this machine (see regmix_plugin/data/stdlib_text.py)")
    build_corpus(out, {k: Documents(documents(k, max_chars, whole)) for k in kinds},
                 CorpusConfig(tokenizer="byte", valid_fraction=0.05, progress=False))
    return out / NATURAL_FILE
