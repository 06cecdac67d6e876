"""Fixtures for tiny real corpora, importable by any test: ``from data_helpers import make_tiny_corpus``
(pytest puts tests/ on sys.path because tests/ has no __init__.py).

``make_tiny_corpus(tmp_path, domains=3)`` builds, with the real ``regmix corpus build`` library
(megatron-core IndexedDatasetBuilder, byte tokenizer), a corpus folder under ``tmp_path`` and returns
``(corpus_dir, natural_mixture_path)``. ``natural.json`` is a regmix.json with token-proportional weights and
relative prefixes (``<domain>/train``, valid ``<domain>/valid``); load it with ``Mixture.load``.

* ``domains=N`` (an int) makes domains ``d0 .. d{N-1}``; the text of domain ``k`` uses only the characters
  of ``domain_alphabet(k)``, so with the byte tokenizer every token id except EOD (256) tells its domain:
  ``domain_of_token(t)``. Alphabets are disjoint for up to ``MAX_DISJOINT`` domains and repeat after that.
* ``domains={"web": [doc, doc, ...], ...}`` uses the given document strings.

Sizes are tiny (default 40 documents of 20-80 bytes per domain) so a corpus builds in well under a second.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from regmix_plugin.data.corpus import NATURAL_FILE, CorpusConfig, Documents, build_corpus

_CHARS = string.ascii_letters + string.digits  # 62 one-byte characters
LETTERS_PER_DOMAIN = 4
MAX_DISJOINT = len(_CHARS) // LETTERS_PER_DOMAIN


def domain_alphabet(k: int) -> str:
    j = (k % MAX_DISJOINT) * LETTERS_PER_DOMAIN
    return _CHARS[j : j + LETTERS_PER_DOMAIN]


def domain_of_token(token_id: int) -> int | None:
    """The domain index whose alphabet holds this byte (None for EOD or padding)."""
    if 0 <= token_id < 256:
        ch = chr(token_id)
        if ch in _CHARS:
            return _CHARS.index(ch) // LETTERS_PER_DOMAIN
    return None


def random_documents(k: int, n_docs: int = 40, doc_len: tuple[int, int] = (20, 80), seed: int = 0) -> list[str]:
    rng = random.Random(f"{seed}-{k}")
    alpha = domain_alphabet(k)
    return ["".join(rng.choices(alpha, k=rng.randint(*doc_len))) for _ in range(n_docs)]


def make_tiny_corpus(
    tmp_path: Path,
    domains: int | dict[str, list[str]] = 3,
    *,
    docs_per_domain: int = 40,
    doc_len: tuple[int, int] = (20, 80),
    seed: int = 0,
    valid_fraction: float = 0.2,
    tokenizer: str = "byte",
    name: str = "corpus",
) -> tuple[Path, Path]:
    if isinstance(domains, int):
        domains = {f"d{k}": random_documents(k, docs_per_domain, doc_len, seed) for k in range(domains)}
    out = Path(tmp_path) / name
    cfg = CorpusConfig(tokenizer=tokenizer, valid_fraction=valid_fraction, progress=False)
    build_corpus(out, {n: Documents(docs) for n, docs in domains.items()}, cfg)
    return out, out / NATURAL_FILE
