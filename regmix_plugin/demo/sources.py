"""Real text for the demo corpus, read from Debian packages and the Python standard library.

Each source yields documents (strings). Nothing here was written by this project: the demo trains on
dictionaries, glossaries, quotations, scripture, documentation and source code that a fresh Debian
machine can install (``scripts/install_system_packages.sh``). A source whose files are missing is skipped
with a message, so the demo still runs on whatever is present.

Sizes are capped per domain (``max_bytes``) so that domains differ in size, which gives a real token prior,
while the corpus stays small enough for 2 cores.
"""

from __future__ import annotations

import glob
import gzip
import html
import os
import re
import struct
import sysconfig
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

_TAG = re.compile(r"<[^>]*>")
_WS_LINE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True)
class Source:
    """One demo domain: a name, where its text comes from, and a byte cap."""

    domain: str
    description: str
    package: str  # the Debian package that provides it ("" for the Python stdlib)
    files: Callable[[], list[str]]
    documents: Callable[[list[str]], Iterator[str]]
    max_bytes: int

    def available(self) -> bool:
        return bool(self.files())

    def read(self) -> list[str]:
        """Documents up to ``max_bytes`` of UTF-8, in a deterministic order."""
        out, total = [], 0
        for doc in self.documents(sorted(self.files())):
            doc = doc.strip()
            if len(doc) < 20:  # headwords, separators and empty entries carry no text
                continue
            n = len(doc.encode("utf-8"))
            if total + n > self.max_bytes:
                break
            out.append(doc)
            total += n
        return out


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        yield block


def _dictzip_entries(paths: list[str]) -> Iterator[str]:
    # dictzip files are gzip-compatible; entries are separated by blank lines and a headword line.
    for p in paths:
        with gzip.open(p, "rt", encoding="utf-8", errors="replace") as f:
            yield from _paragraphs(f.read())


def _wordnet_glosses(paths: list[str]) -> Iterator[str]:
    # data.* lines: "offset lex_filenum ss_type w_cnt word ... | gloss"; licence header lines start with spaces.
    for p in paths:
        batch: list[str] = []
        with open(p, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or "| " not in line:
                    continue
                fields = line.split()
                word = fields[4].replace("_", " ") if len(fields) > 4 else ""
                batch.append(f"{word}: {line.split('| ', 1)[1].strip()}")
                if len(batch) == 20:  # one document per 20 glosses keeps documents paragraph-sized
                    yield "\n".join(batch)
                    batch = []
        if batch:
            yield "\n".join(batch)


def _fortunes(paths: list[str]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            yield from f.read().split("\n%\n")


def _sword_ztext(paths: list[str]) -> Iterator[str]:
    # A SWORD zText module stores zlib blocks of OSIS XML; *.bzs indexes them as <III (offset, size, raw size).
    for bzs in paths:
        bzz = bzs[:-1] + "z"
        with open(bzs, "rb") as f:
            index = f.read()
        with open(bzz, "rb") as f:
            blob = f.read()
        for i in range(0, len(index) - 11, 12):
            offset, size, _raw = struct.unpack("<III", index[i : i + 12])
            if size == 0:
                continue
            text = zlib.decompress(blob[offset : offset + size]).decode("utf-8", errors="replace")
            text = re.sub(r"\s+", " ", html.unescape(_TAG.sub(" ", text)))
            text = re.sub(r" ([.,;:?!’])", r"\1", text)  # tags stood between words and punctuation
            yield from _chunks(text, 1500)


def _chunks(text: str, size: int) -> Iterator[str]:
    """Split a long run of prose into documents of about ``size`` characters, at sentence ends."""
    start = 0
    while start < len(text):
        end = text.find(". ", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _plain_files(paths: list[str]) -> Iterator[str]:
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                yield _WS_LINE.sub("\n", f.read())
        except (UnicodeDecodeError, OSError):
            continue


def _glob(*patterns: str) -> Callable[[], list[str]]:
    def files() -> list[str]:
        out: list[str] = []
        for pat in patterns:
            out += [p for p in glob.glob(pat, recursive=True) if os.path.isfile(p)]
        return out

    return files


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    files = glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "*", "*.py"))
    return [f for f in files if "site-packages" not in f and "/test" not in f]


def _fortune_files() -> list[str]:
    return [p for p in _glob("/usr/share/games/fortunes/*")() if not p.endswith((".dat", ".u8")) and "off/" not in p]


DEMO_SOURCES: tuple[Source, ...] = (
    Source("dictionary", "Webster's 1913 via GCIDE", "dict-gcide",
           _glob("/usr/share/dictd/gcide.dict.dz"), _dictzip_entries, 3_000_000),
    Source("glosses", "WordNet 3 synset glosses", "wordnet-base",
           _glob("/usr/share/wordnet/data.noun", "/usr/share/wordnet/data.verb", "/usr/share/wordnet/data.adj"),
           _wordnet_glosses, 1_500_000),
    Source("quotes", "fortune-mod quotations", "fortunes", _fortune_files, _fortunes, 1_000_000),
    Source("scripture", "King James and World English Bibles (SWORD)", "sword-text-kjv",
           _glob("/usr/share/sword/modules/texts/ztext/*/*.bzs"), _sword_ztext, 2_000_000),
    Source("computing", "FOLDOC and the Jargon File", "dict-foldoc",
           _glob("/usr/share/dictd/foldoc.dict.dz", "/usr/share/dictd/jargon.dict.dz"), _dictzip_entries, 700_000),
    Source("pydocs", "Python documentation (reST sources)", "python3-doc",
           _glob("/usr/share/doc/python3*/html/_sources/**/*.txt"), _plain_files, 1_200_000),
    Source("code", "Python standard library source", "", _stdlib_files, _plain_files, 2_500_000),
)


def _paragraph_files(paths: list[str]) -> Iterator[str]:
    # Long files (a licence, a package's changelog) as paragraphs, so the held-out split spans many of them.
    for p in paths:
        opener = gzip.open if p.endswith(".gz") else open
        try:
            with opener(p, "rt", encoding="utf-8", errors="replace") as f:
                yield from _paragraphs(_WS_LINE.sub("\n", f.read()))
        except OSError:
            continue


def _license_files() -> list[str]:
    # GPL, LGPL and GFDL are symlinks to a numbered version there: each text once.
    files = {os.path.realpath(p) for p in _glob("/usr/share/common-licenses/*")()}
    return sorted(files)


# The demo's evaluation sets (docs/DECISIONS.md 49): real text that no training domain above draws from.
# They are never trained on; the demo minimises their mean validation loss. Their names start with
# "eval_", which is how the demo's target (mean(valid/eval_*/loss)) finds them.
EVAL_SOURCES: tuple[Source, ...] = (
    Source("eval_devil", "Ambrose Bierce's The Devil's Dictionary", "dict-devil",
           _glob("/usr/share/dictd/devil.dict.dz"), _dictzip_entries, 80_000),
    Source("eval_licenses", "Debian's licence texts (/usr/share/common-licenses)", "base-files",
           _license_files, _paragraph_files, 80_000),
    Source("eval_changelogs", "Debian package changelogs (changelog.Debian.gz)", "",
           _glob("/usr/share/doc/*/changelog.Debian.gz"), _paragraph_files, 80_000),
)


def available_sources(names: Iterable[str] | None = None, log: Callable[[str], None] = print,
                      sources: tuple[Source, ...] = DEMO_SOURCES) -> list[Source]:
    """The demo sources present on this machine; missing ones are reported and skipped."""
    wanted = set(names) if names else None
    out = []
    for s in sources:
        if wanted is not None and s.domain not in wanted:
            continue
        if s.available():
            out.append(s)
        else:
            hint = f" (apt-get install {s.package})" if s.package else ""
            log(f"skipping domain {s.domain!r}: {s.description} not found on this machine{hint}")
    return out
