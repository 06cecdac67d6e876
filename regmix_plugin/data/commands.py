"""``regmix corpus build`` and ``regmix corpus stats``: thin CLI over :mod:`regmix_plugin.data.corpus`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from regmix_plugin.errors import RegmixError


def register(sub) -> None:
    """Add this stage's subcommands to the `regmix` parser."""
    corpus = sub.add_parser("corpus", help="build or inspect a corpus of Megatron .bin/.idx domains")
    csub = corpus.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    csub.required = True

    p = csub.add_parser(
        "build",
        help="tokenize text files into one train and one held-out valid .bin/.idx pair per domain",
        description="Writes DIR/<domain>/{train,valid}.{bin,idx}, DIR/corpus.json (token counts, tokenizer) and "
        "DIR/natural.json (a regmix.json with token-proportional weights). Atomic: a failed build leaves nothing.",
    )
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    p.add_argument("--domain", action="append", required=True, metavar="NAME=GLOB",
                   help="a domain and its text files (.gz read compressed; ** recurses); repeat per domain or glob")
    p.add_argument("--tokenizer", default="byte", help="'byte' (default) or the path of a HuggingFace tokenizer.json")
    p.add_argument("--eod-token", help="end-of-document token of the HF tokenizer (default: a known one, e.g. <|endoftext|>)")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="share of documents held out for validation")
    p.add_argument("--doc-split", choices=("file", "paragraph"), default="file",
                   help="one document per file (default) or per blank-line separated paragraph")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: only for inputs over 16 MiB)")
    p.set_defaults(func=_build)

    p = csub.add_parser(
        "stats",
        help="token and document counts read from .idx files (ours or Megatron-LM preprocess_data.py's)",
    )
    p.add_argument("paths", nargs="+", metavar="DIR|PREFIX",
                   help="a corpus folder, any folder of .idx files, or a data prefix (x, x.bin or x.idx)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_stats)


def _build(args: argparse.Namespace) -> int:
    from regmix_plugin.data.corpus import CorpusConfig, build_corpus, natural_mixture, parse_domain_args
    from regmix_plugin.mixture import format_table

    cfg = CorpusConfig(
        tokenizer=args.tokenizer,
        eod_token=args.eod_token,
        valid_fraction=args.valid_fraction,
        doc_split=args.doc_split,
        force=args.force,
        progress=args.progress,
    )
    doc = build_corpus(args.out, parse_domain_args(args.domain), cfg)
    print(format_table(natural_mixture(doc)))
    valid = sum(d["valid_tokens"] for d in doc["domains"].values())
    print(f"wrote {args.out}: {len(doc['domains'])} domains, tokenizer {doc['tokenizer']['name']}, "
          f"{valid:,} held-out tokens; mixture {os.path.join(args.out, 'natural.json')}")
    return 0


def stats_rows(paths: list[str]) -> list[dict]:
    """One row per prefix found under ``paths`` (see ``regmix corpus stats --help``)."""
    from regmix_plugin.data.corpus import load_corpus
    from regmix_plugin.data.indexed import index_stats, strip_extension

    rows = []
    for arg in paths:
        folder = Path(arg)
        if folder.is_dir() and (folder / "corpus.json").is_file():
            doc = load_corpus(folder)
            for name, d in doc["domains"].items():
                for split, key in (("train", "prefix"), ("valid", "valid_prefix")):
                    st = index_stats(str(folder / d[key]), f"{folder}/corpus.json: domains.{name}.{key}")
                    rows.append({"domain": name, "split": split, **vars(st)})
        elif folder.is_dir():
            found = sorted(folder.rglob("*.idx"))
            if not found:
                raise RegmixError(f"{arg}: no .idx files in this folder; give a corpus folder or a data prefix")
            rows += [{"domain": "-", "split": "-", **vars(index_stats(str(f)[:-4], arg))} for f in found]
        else:
            rows.append({"domain": "-", "split": "-", **vars(index_stats(strip_extension(arg), arg))})
    return rows


def format_stats(rows: list[dict]) -> str:
    width = max(len("prefix"), *(len(r["prefix"]) for r in rows))
    lines = [f"{'prefix':<{width}}  {'domain':<12} {'split':<5} {'documents':>11} {'tokens':>15} {'dtype':<7} {'MiB':>9}"]
    for r in rows:
        lines.append(f"{r['prefix']:<{width}}  {r['domain']:<12} {r['split']:<5} {r['documents']:>11,} "
                     f"{r['tokens']:>15,} {r['dtype']:<7} {r['bin_bytes'] / 2**20:>9.2f}")
    tokens = sum(r["tokens"] for r in rows)
    docs = sum(r["documents"] for r in rows)
    lines.append(f"{len(rows)} prefixes, {docs:,} documents, {tokens:,} tokens")
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    rows = stats_rows(args.paths)
    print(json.dumps(rows, indent=2) if args.json else format_stats(rows))
    return 0
