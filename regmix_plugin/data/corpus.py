"""Build a corpus of Megatron IndexedDatasets from text, one train and one held-out validation pair per domain.

Layout written by :func:`build_corpus` (and ``regmix corpus build``)::

    DIR/<domain>/train.bin, train.idx     megatron-core IndexedDatasetBuilder output, one sequence per document
    DIR/<domain>/valid.bin, valid.idx     the held-out documents of that domain
    DIR/corpus.json                       {"version": 1, "tokenizer": {...}, "domains": {name: {...counts}}}
    DIR/natural.json                      a regmix.json with token-proportional weights and relative prefixes

Every document is tokenized and terminated by the tokenizer's end-of-document id. Whether a document is
held out depends only on a hash of its text (``valid_fraction`` of the hash space), so the split does not
depend on file order and a document that occurs twice lands on the same side both times. Each domain with
two or more documents gets at least one in each split.

The build is atomic: everything is written into a temporary folder beside ``DIR`` and renamed into place at
the end, so a failed or interrupted build leaves no partial output.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from regmix_plugin import __version__
from regmix_plugin.data.indexed import quiet_megatron
from regmix_plugin.data.tokenizer import CORPUS_FILE, Tokenizer, load_tokenizer
from regmix_plugin.errors import ConfigError, RegmixError, check_choice
from regmix_plugin.io import atomic_write_json, read_json_file
from regmix_plugin.mixture import Domain, Mixture, check_domain_name

CORPUS_VERSION = 1
NATURAL_FILE = "natural.json"
DOC_SPLITS = ("file", "paragraph")
# Show a progress bar when the inputs are at least this large (bytes) or of unknown size.
PROGRESS_MIN_BYTES = 16 << 20
ENCODE_BATCH = 256  # documents per tokenizer call
_HASH_SPACE = float(1 << 64)


class Documents:
    """A stream of document strings for one domain (as opposed to a list of file paths)."""

    def __init__(self, docs: Iterable[str], description: str = "<documents>") -> None:
        self.docs = docs
        self.description = description

    def __iter__(self) -> Iterator[str]:
        return iter(self.docs)


@dataclass
class CorpusConfig:
    """How to turn text into a corpus; the domains and their inputs are passed to :func:`build_corpus`."""

    tokenizer: str = "byte"  # "byte" or the path of a HuggingFace tokenizer.json
    eod_token: str | None = None  # end-of-document token of an HF tokenizer; None: a known one
    valid_fraction: float = 0.05  # share of documents held out (by hash of the text)
    doc_split: str = "file"  # one document per file, or per blank-line separated paragraph
    force: bool = False  # replace an existing output folder
    progress: bool | None = None  # None: a bar only on large inputs

    def __post_init__(self) -> None:
        check_choice("doc_split", self.doc_split, DOC_SPLITS)
        f = self.valid_fraction
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1:
            raise ConfigError(f"valid_fraction: {f!r} is not in (0, 1); give e.g. 0.05 to hold out 5% of documents")


@dataclass
class DomainStats:
    tokens: int = 0
    documents: int = 0
    valid_tokens: int = 0
    valid_documents: int = 0
    files: int = 0
    input_bytes: int = 0
    sources: list[str] = field(default_factory=list)


def expand_glob(name: str, pattern: str) -> list[str]:
    """Files matching ``pattern`` (``**`` recursive); a matched folder contributes all files below it."""
    files: list[str] = []
    for m in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        if os.path.isdir(m):
            files += sorted(str(p) for p in Path(m).rglob("*") if p.is_file())
        elif os.path.isfile(m):
            files.append(m)
    if not files:
        raise RegmixError(f"--domain {name}={pattern}: no files match; check the pattern (quote it so the shell does not expand it)")
    return files


def parse_domain_args(specs: list[str]) -> dict[str, list[str]]:
    """``["web=data/web/*.txt", "web=more/*.gz", "code=src/**/*.py"]`` -> ``{name: [files]}`` in first-seen order."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep or not name or not pattern:
            raise RegmixError(f"--domain {spec!r}: expected NAME=GLOB, e.g. --domain web='data/web/*.txt'")
        out.setdefault(name, []).extend(expand_glob(name, pattern))
    return out


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _paragraphs(f: io.TextIOBase) -> Iterator[str]:
    buf: list[str] = []
    for line in f:
        if line.strip():
            buf.append(line)
        elif buf:
            yield "".join(buf)
            buf = []
    if buf:
        yield "".join(buf)


def _file_documents(path: str, doc_split: str) -> Iterator[str]:
    try:
        with _open_text(path) as f:
            if doc_split == "file":
                yield f.read()
            else:
                yield from _paragraphs(f)
    except (OSError, EOFError) as e:
        raise RegmixError(f"{path}: cannot read ({e.__class__.__name__}: {e}); fix or remove the file") from None


def _doc_hash(text: str) -> float:
    """A number in [0, 1) fixed by the document text alone."""
    h = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=8).digest()
    return int.from_bytes(h, "little") / _HASH_SPACE


class _DomainWriter:
    """Writes one domain's train/valid pairs; holds back one document per side so neither ends up empty.

    ``hold_train`` is the train-bound document with the smallest hash (the one that would be held out next
    if the fraction grew) and ``hold_valid`` the valid-bound one with the largest; at the end each goes to its
    own side unless the other side would otherwise be empty.
    """

    def __init__(self, folder: Path, tokenizer: Tokenizer) -> None:
        with quiet_megatron():
            from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        folder.mkdir(parents=True)
        self.folder = folder
        self.eod = tokenizer.info.eod
        self.dtype = tokenizer.info.dtype
        self.builders = {s: IndexedDatasetBuilder(str(folder / f"{s}.bin"), dtype=self.dtype) for s in ("train", "valid")}
        self.counts = {s: [0, 0] for s in ("train", "valid")}  # documents, tokens
        self.hold: dict[str, tuple[float, np.ndarray] | None] = {"train": None, "valid": None}

    def _write(self, split: str, tokens: np.ndarray) -> None:
        self.builders[split].add_document(tokens, [len(tokens)])
        self.counts[split][0] += 1
        self.counts[split][1] += len(tokens)

    def add(self, h: float, tokens: np.ndarray, to_valid: bool) -> None:
        split = "valid" if to_valid else "train"
        held = self.hold[split]
        # train keeps its smallest hash back, valid its largest.
        better = held is None or (h > held[0] if to_valid else h < held[0])
        if better:
            self.hold[split] = (h, tokens)
            if held is not None:
                self._write(split, held[1])
        else:
            self._write(split, tokens)

    def finish(self) -> dict[str, list[int]]:
        ht, hv = self.hold["train"], self.hold["valid"]
        n_train = self.counts["train"][0] + (ht is not None)
        n_valid = self.counts["valid"][0] + (hv is not None)
        if ht is not None:
            self._write("valid" if n_valid == 0 and n_train >= 2 else "train", ht[1])
        if hv is not None:
            self._write("train" if n_train == 0 and n_valid >= 2 else "valid", hv[1])
        for s, b in self.builders.items():
            b.finalize(str(self.folder / f"{s}.idx"))
        return self.counts

    def add_texts(self, texts: list[str], tokenizer: Tokenizer, valid_fraction: float) -> None:
        for text, ids in zip(texts, tokenizer.encode_batch(texts)):
            tokens = np.empty(len(ids) + 1, dtype=self.dtype)
            tokens[:-1] = ids
            tokens[-1] = self.eod
            h = _doc_hash(text)
            self.add(h, tokens, to_valid=h < valid_fraction)


def _file_size(domain: str, path: str | os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        raise RegmixError(f"domains[{domain}]: {path} does not exist or cannot be read; fix the file list") from None


_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _check_name(name: Any, i: int) -> None:
    check_domain_name(name, f"domains[{i}].name")
    # The name becomes a folder: keep it portable and inside --out ('..', '.hidden', control characters).
    if not _FOLDER_NAME.fullmatch(name):
        raise RegmixError(
            f"domains[{i}].name: {name!r} cannot be a corpus folder name; use letters, digits, '-', '_' or '.' "
            "and do not start with '.'"
        )


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise RegmixError(f"--out: {out} exists and is not empty; choose a new folder or pass --force to replace it")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build to ``out``; an existing ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_corpus(
    out: str | os.PathLike,
    domains: Mapping[str, Iterable[str | os.PathLike] | Documents],
    cfg: CorpusConfig | None = None,
) -> dict[str, Any]:
    """Tokenize ``domains`` into ``out`` (layout in the module doc) and return the ``corpus.json`` content.

    ``domains`` maps a domain name to its input: a list or tuple of text file paths (``.gz`` is read
    compressed), split into documents by ``cfg.doc_split``; or any other iterable (a generator, a
    :class:`Documents`) of document strings, which are used as they are.
    """
    from tqdm import tqdm

    cfg = cfg or CorpusConfig()
    out = Path(out)
    if not domains:
        raise RegmixError("--domain: no domains given; add --domain NAME=GLOB for each domain")
    for i, name in enumerate(domains):
        _check_name(name, i)
    _prepare_out(out, cfg.force)
    tokenizer = load_tokenizer(cfg.tokenizer, eod_token=cfg.eod_token)
    with quiet_megatron():  # import megatron-core (seconds) before the progress bar starts its clock
        import megatron.core.datasets.indexed_dataset  # noqa: F401

    sizes = {n: sum(_file_size(n, p) for p in src) for n, src in domains.items() if isinstance(src, (list, tuple))}
    streams = len(sizes) < len(domains)
    show = cfg.progress if cfg.progress is not None else (streams or sum(sizes.values()) >= PROGRESS_MIN_BYTES)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        stats: dict[str, DomainStats] = {}
        with tqdm(total=None if streams else sum(sizes.values()), unit="B", unit_scale=True,
                  disable=not show, desc="corpus", mininterval=1.0) as bar:
            for name, src in domains.items():
                bar.set_postfix_str(name)
                stats[name] = _build_domain(tmp / name, src, tokenizer, cfg, bar)
        doc = _corpus_json(stats, tokenizer, cfg)
        atomic_write_json(tmp / CORPUS_FILE, doc)
        natural_mixture(doc).save(tmp / NATURAL_FILE)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def _domain_texts(name: str, src: Any, cfg: CorpusConfig, st: DomainStats, bar) -> Iterator[str]:
    """The documents of one domain's input, counting files and bytes into ``st`` and the progress bar."""
    if isinstance(src, (str, os.PathLike)):
        raise ConfigError(f"domains[{name}]: expected a list of files or an iterable of documents, got one path; wrap it in a list")
    if isinstance(src, (list, tuple)):
        for path in map(str, src):
            st.files += 1
            st.sources.append(path)
            yield from _file_documents(path, cfg.doc_split)
            size = os.path.getsize(path)
            st.input_bytes += size
            bar.update(size)
        return
    st.sources.append(getattr(src, "description", "<documents>"))
    for text in src:
        if not isinstance(text, str):
            raise ConfigError(f"domains[{name}]: documents must be strings, got {type(text).__name__}")
        st.input_bytes += len(text)
        bar.update(len(text))
        yield text


def _build_domain(folder: Path, src: Any, tokenizer: Tokenizer, cfg: CorpusConfig, bar) -> DomainStats:
    writer = _DomainWriter(folder, tokenizer)
    st = DomainStats()
    batch: list[str] = []
    # Batches let an HF tokenizer encode in parallel (in Rust); the byte tokenizer does not care.
    for text in _domain_texts(folder.name, src, cfg, st, bar):
        if text.strip():
            batch.append(text)
        if len(batch) >= ENCODE_BATCH:
            writer.add_texts(batch, tokenizer, cfg.valid_fraction)
            batch = []
    writer.add_texts(batch, tokenizer, cfg.valid_fraction)
    counts = writer.finish()
    st.documents, st.tokens = counts["train"]
    st.valid_documents, st.valid_tokens = counts["valid"]
    if st.tokens == 0:
        raise RegmixError(f"--domain {folder.name}: no non-empty documents in its inputs; check the files or the pattern")
    return st


def _corpus_json(stats: Mapping[str, DomainStats], tokenizer: Tokenizer, cfg: CorpusConfig) -> dict[str, Any]:
    domains = {}
    for name, st in stats.items():
        domains[name] = {
            "prefix": f"{name}/train",
            "valid_prefix": f"{name}/valid",
            "tokens": st.tokens,
            "valid_tokens": st.valid_tokens,
            "documents": st.documents,
            "valid_documents": st.valid_documents,
            "files": st.files,
            "sources": st.sources[:20] + ([f"... {len(st.sources) - 20} more"] if len(st.sources) > 20 else []),
        }
    return {
        "version": CORPUS_VERSION,
        "tokenizer": tokenizer.info.to_dict(),
        "doc_split": cfg.doc_split,
        "valid_fraction": cfg.valid_fraction,
        "tool": "regmix corpus build",
        "tool_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "domains": domains,
    }


def natural_mixture(corpus: Mapping[str, Any], name: str = "natural") -> Mixture:
    """The token-proportional mixture of a corpus (relative prefixes: save it inside the corpus folder)."""
    domains = []
    for dname, d in corpus["domains"].items():
        domains.append(
            Domain(
                name=dname,
                weight=float(d["tokens"]),
                prefixes=[d["prefix"]],
                tokens=int(d["tokens"]),
                # A 1-document domain has an empty held-out set; the dataset builder then falls back to train data.
                valid_prefixes=[d["valid_prefix"]] if d.get("valid_tokens") else [],
            )
        )
    mix = Mixture(domains=domains, name=name)
    return mix.with_provenance(tool="regmix corpus build", weights="token counts of the training split")


def load_corpus(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``corpus.json`` of a corpus folder, with a one-line error if it is missing or broken."""
    path = Path(folder) / CORPUS_FILE
    doc = read_json_file(path, RegmixError, str(path), "corpus.json",
                         "give a folder made by `regmix corpus build`, or rebuild it")
    if not isinstance(doc, dict) or doc.get("version") != CORPUS_VERSION or not isinstance(doc.get("domains"), dict):
        raise RegmixError(f"{path}: not a version-{CORPUS_VERSION} corpus.json; rebuild the corpus with `regmix corpus build`")
    return doc

