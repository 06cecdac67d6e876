"""Tokenizers for corpus building, and the small record of one that the dataset builder needs.

Two tokenizers are supported:

* ``byte`` (the default): UTF-8 bytes are token ids 0..255 and the end-of-document token is 256, so the
  vocabulary has 257 entries. It needs no files and no downloads.
* ``hf``: a HuggingFace ``tokenizer.json`` loaded with the ``tokenizers`` package. The end-of-document id
  is the first of :data:`EOD_CANDIDATES` that the vocabulary has, unless an explicit token is given.

:class:`TokenizerInfo` is all that megatron-core's ``GPTDatasetConfig`` needs (``vocab_size``, ``eod``
and ``unique_identifiers``), and what ``corpus.json`` records. :func:`infer_tokenizer` reads it back for
a mixture from the ``corpus.json`` files near its prefixes and refuses mixtures whose domains were built
with different tokenizers.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from regmix_plugin.config_schema import Choice, Number, Text, config, validate
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import read_json_file

CORPUS_FILE = "corpus.json"
BYTE_VOCAB_SIZE = 257
BYTE_EOD = 256
# End-of-document tokens of common HuggingFace tokenizers, tried in this order.
EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "[SEP]", "<eod>")


class TokenizerMismatchError(RegmixError):
    """Two parts of one mixture (or a mixture and a config) were tokenized differently."""


@config(frozen=True, error=RegmixError, prefix="tokenizer")
class TokenizerInfo:
    """What the dataset builder must know about the tokenizer that produced the ``.bin`` files.

    ``name`` identifies the tokenizer (``byte`` or ``hf:<file name>``); ``sha256`` pins the exact
    ``tokenizer.json`` for HF tokenizers so that two corpora are only mixed when their ids mean the same.
    """

    vocab_size: Number(integer=True, ge=1)
    eod: Number(integer=True, ge=0)
    name: Text = "byte"
    type: Choice("byte", "hf") = "byte"
    sha256: Text | None = None

    def __post_init__(self) -> None:
        if self.eod >= self.vocab_size:
            raise RegmixError(f"tokenizer.eod: {self.eod!r} is not a token id in [0, {self.vocab_size}); fix the eod id")

    @property
    def unique_identifiers(self) -> dict[str, Any]:
        # megatron-core hashes this into its index-cache file names (GPTDataset/BlendedDataset).
        return {"class": "TokenizerInfo", "name": self.name, "vocab_size": self.vocab_size, "eod": self.eod,
                "sha256": self.sha256}

    @property
    def dtype(self) -> type[np.unsignedinteger] | type[np.signedinteger]:
        """The ``.bin`` token dtype, chosen as Megatron-LM's preprocess_data.py does."""
        return np.uint16 if self.vocab_size < 65500 else np.int32

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["sha256"] is None:
            del d["sha256"]
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "tokenizer") -> "TokenizerInfo":
        if not isinstance(data, dict):
            raise RegmixError(f"{where}: expected an object with type, vocab_size and eod")
        known = {"vocab_size", "eod", "name", "type", "sha256"}
        missing = [k for k in ("vocab_size", "eod") if k not in data]
        if missing:
            raise RegmixError(f"{where}.{missing[0]}: missing; rebuild the corpus with `regmix corpus build`")
        # Unknown keys are ignored here on purpose: corpus.json may carry descriptive extras (path, ...).
        return validate(cls, {k: v for k, v in data.items() if k in known}, prefix=where)

    def same_ids_as(self, other: "TokenizerInfo") -> bool:
        """True when token ids mean the same in both (name and file hash agree, or both are byte-level)."""
        return (self.type, self.vocab_size, self.eod, self.sha256) == (other.type, other.vocab_size, other.eod, other.sha256)


class Tokenizer(Protocol):
    info: TokenizerInfo

    def encode(self, text: str) -> np.ndarray: ...

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]: ...


class ByteTokenizer:
    """UTF-8 bytes as token ids; 256 is the end-of-document token."""

    info = TokenizerInfo(vocab_size=BYTE_VOCAB_SIZE, eod=BYTE_EOD, name="byte", type="byte")

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8).astype(np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]


class HFTokenizer:
    """A HuggingFace ``tokenizer.json`` through the ``tokenizers`` package (no network access)."""

    def __init__(self, path: str | os.PathLike, eod_token: str | None = None) -> None:
        from tokenizers import Tokenizer as _HFTok

        path = Path(path)
        try:
            raw = path.read_bytes()
            self._tok = _HFTok.from_str(raw.decode("utf-8"))
        except FileNotFoundError:
            raise RegmixError(f"--tokenizer: {path} does not exist; give 'byte' or the path of a tokenizer.json") from None
        except Exception as e:  # tokenizers raises plain Exception subclasses on bad files
            raise RegmixError(f"--tokenizer: {path} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        candidates = (eod_token,) if eod_token else EOD_CANDIDATES
        eod = next((i for i in (self._tok.token_to_id(t) for t in candidates) if i is not None), None)
        if eod is None:
            raise RegmixError(
                f"--tokenizer: {path} has none of the end-of-document tokens {', '.join(candidates)}; "
                "add one to the tokenizer or pass --eod-token"
            )
        self.info = TokenizerInfo(
            vocab_size=self._tok.get_vocab_size(with_added_tokens=True),
            eod=eod,
            name=f"hf:{path.name}",
            type="hf",
            sha256=hashlib.sha256(raw).hexdigest(),
        )

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self._tok.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def load_tokenizer(spec: str | os.PathLike = "byte", eod_token: str | None = None) -> ByteTokenizer | HFTokenizer:
    """``"byte"`` or the path of a HuggingFace ``tokenizer.json``."""
    if str(spec) == "byte":
        return ByteTokenizer()
    return HFTokenizer(spec, eod_token=eod_token)


def find_corpus_json(prefix: str) -> Path | None:
    """The ``corpus.json`` describing ``prefix``: ``DIR/<domain>/train`` has it at ``DIR/corpus.json``."""
    p = Path(prefix).parent
    for folder in (p, p.parent):
        candidate = folder / CORPUS_FILE
        if candidate.is_file():
            return candidate
    return None


def read_corpus_tokenizer(corpus_json: Path) -> TokenizerInfo:
    data = read_json_file(corpus_json, RegmixError, str(corpus_json), "corpus.json",
                          "rebuild it with `regmix corpus build`")
    if not isinstance(data, dict):
        raise RegmixError(f"{corpus_json}: expected a JSON object; rebuild it with `regmix corpus build`")
    return TokenizerInfo.from_dict(data.get("tokenizer"), where=f"{corpus_json}: tokenizer")


def infer_tokenizer(mixture, required: bool = True) -> TokenizerInfo | None:
    """The tokenizer that every prefix of ``mixture`` was built with, read from nearby ``corpus.json`` files.

    Raises :class:`TokenizerMismatchError` when two domains disagree. Prefixes without a ``corpus.json``
    (for example made by Megatron-LM's preprocess_data.py) are skipped; when none has one, this raises if
    ``required`` (the message says to pass the tokenizer explicitly) and returns None otherwise.
    """
    found: TokenizerInfo | None = None
    found_at = ""
    seen: dict[Path, TokenizerInfo] = {}
    for i, d in enumerate(mixture.domains):
        for field_name in ("prefixes", "valid_prefixes"):
            for j, p in enumerate(getattr(d, field_name)):
                cj = find_corpus_json(mixture.resolve(p))
                if cj is None:
                    continue
                if cj not in seen:
                    seen[cj] = read_corpus_tokenizer(cj)
                info = seen[cj]
                where = f"domains[{i}].{field_name}[{j}] ({cj})"
                if found is None:
                    found, found_at = info, where
                elif not found.same_ids_as(info):
                    raise TokenizerMismatchError(
                        f"{where}: tokenizer {info.name} (vocab {info.vocab_size}) differs from {found.name} "
                        f"(vocab {found.vocab_size}) of {found_at}; rebuild all domains with one tokenizer"
                    )
    if found is None and required:
        raise RegmixError(
            "tokenizer: no corpus.json found next to the mixture's prefixes; pass the tokenizer explicitly "
            "(BlendConfig(tokenizer=TokenizerInfo(vocab_size, eod)))"
        )
    return found


def check_tokenizer(mixture, tokenizer: TokenizerInfo) -> None:
    """Raise :class:`TokenizerMismatchError` if ``tokenizer`` is not the one the mixture's corpus was built with."""
    found = infer_tokenizer(mixture, required=False)
    if found is not None and not found.same_ids_as(tokenizer):
        raise TokenizerMismatchError(
            f"tokenizer: {tokenizer.name} (vocab {tokenizer.vocab_size}, eod {tokenizer.eod}) does not match the "
            f"corpus tokenizer {found.name} (vocab {found.vocab_size}, eod {found.eod}); use the corpus tokenizer"
        )
