"""`regmix corpus build/stats` and the corpus library on real text files and real .bin/.idx in tmp_path."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from data_helpers import make_tiny_corpus

from regmix_plugin.cli import main
from regmix_plugin.data.blend import BlendConfig, build_datasets
from regmix_plugin.data.corpus import CorpusConfig, Documents, build_corpus, load_corpus
from regmix_plugin.data.indexed import open_indexed
from regmix_plugin.data.tokenizer import BYTE_EOD, TokenizerMismatchError, load_tokenizer
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.mixture import Mixture

WEB = [f"Paragraph {i} of the web domain.\nIt has two lines." for i in range(30)]
CODE = [f"def f{i}(x):\n    return x * {i}" for i in range(12)]


def _write_inputs(root: Path) -> None:
    (root / "web").mkdir(parents=True)
    (root / "code").mkdir()
    for j in range(3):  # 10 paragraphs per file, blank-line separated
        (root / "web" / f"p{j}.txt").write_text("\n\n\n".join(WEB[j * 10 : (j + 1) * 10]) + "\n")
    for i, c in enumerate(CODE):  # one document per .gz file
        with gzip.open(root / "code" / f"m{i:02d}.py.gz", "wt") as f:
            f.write(c)


def _documents(prefix: str) -> list[str]:
    """Decode every document of a byte-tokenized prefix; each must end in EOD."""
    ds = open_indexed(prefix)
    docs = []
    for i in range(len(ds)):
        toks = ds[i]
        assert toks[-1] == BYTE_EOD and BYTE_EOD not in toks[:-1]
        docs.append(bytes(toks[:-1].astype(np.uint8)).decode())
    return docs


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("regmix: error: ") and "Traceback" not in err, err
    return err


def test_build_and_stats_roundtrip(tmp_path, capsys):
    _write_inputs(tmp_path / "in")
    out = tmp_path / "corpus"
    rc = main(["corpus", "build", "--out", str(out), "--domain", f"web={tmp_path}/in/web/*.txt",
               "--domain", f"code={tmp_path}/in/code/*.gz", "--doc-split", "paragraph", "--valid-fraction", "0.25"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out

    doc = load_corpus(out)
    assert doc["tokenizer"] == {"vocab_size": 257, "eod": 256, "name": "byte", "type": "byte"}
    for name, texts in (("web", WEB), ("code", CODE)):
        d = doc["domains"][name]
        train, valid = _documents(str(out / name / "train")), _documents(str(out / name / "valid"))
        # Every input document lands in exactly one split, unchanged (paragraph text is stripped of the newline).
        assert sorted(t.strip() for t in train + valid) == sorted(texts)
        assert not set(train) & set(valid) and train and valid
        assert d["documents"] == len(train) and d["valid_documents"] == len(valid)
        assert d["tokens"] == sum(len(t.encode()) + 1 for t in train)
        assert d["valid_tokens"] == sum(len(t.encode()) + 1 for t in valid)

    # natural.json: token-proportional, relative prefixes that resolve, held-out sets attached.
    mix = Mixture.load(out / "natural.json", check_files=True)
    total = sum(d["tokens"] for d in doc["domains"].values())
    assert mix.names == ["web", "code"]
    assert mix.weights == pytest.approx([doc["domains"][n]["tokens"] / total for n in mix.names])
    assert mix.domains[0].prefixes == ["web/train"] and mix.domains[0].valid_prefixes == ["web/valid"]

    assert main(["corpus", "stats", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = {(r["domain"], r["split"]): (r["documents"], r["tokens"]) for r in rows}
    for name, d in doc["domains"].items():
        assert got[(name, "train")] == (d["documents"], d["tokens"])
        assert got[(name, "valid")] == (d["valid_documents"], d["valid_tokens"])
    assert main(["corpus", "stats", str(out / "web" / "train.idx")]) == 0
    table = capsys.readouterr().out
    assert f"{doc['domains']['web']['tokens']:,}" in table and "1 prefixes" in table


def test_valid_split_depends_on_text_not_order(tmp_path):
    cfg = CorpusConfig(valid_fraction=0.3, progress=False)
    a = build_corpus(tmp_path / "a", {"web": Documents(WEB)}, cfg)
    b = build_corpus(tmp_path / "b", {"web": Documents(list(reversed(WEB)))}, cfg)
    va, vb = _documents(str(tmp_path / "a/web/valid")), _documents(str(tmp_path / "b/web/valid"))
    assert sorted(va) == sorted(vb) and a["domains"]["web"]["valid_tokens"] == b["domains"]["web"]["valid_tokens"]
    # Roughly the requested share, and never an empty side.
    assert 0 < len(va) < len(WEB)


def test_tiny_domains_get_both_splits_when_possible(tmp_path):
    cfg = CorpusConfig(valid_fraction=0.01, progress=False)
    doc = build_corpus(tmp_path / "c", {"two": Documents(["alpha beta", "gamma delta"]), "one": iter(["lonely"])}, cfg)
    assert doc["domains"]["two"]["documents"] == 1 and doc["domains"]["two"]["valid_documents"] == 1
    assert doc["domains"]["one"]["documents"] == 1 and doc["domains"]["one"]["valid_documents"] == 0
    mix = Mixture.load(tmp_path / "c" / "natural.json")
    assert mix.domains[1].valid_prefixes == []  # the dataset builder falls back to the training data
    from regmix_plugin.data.commands import stats_rows

    empty = [r for r in stats_rows([str(tmp_path / "c")]) if r["domain"] == "one" and r["split"] == "valid"]
    assert [(r["documents"], r["tokens"], r["bin_bytes"]) for r in empty] == [(0, 0, 0)]
    doc = build_corpus(tmp_path / "d", {"two": Documents(["alpha beta", "gamma delta"])},
                       CorpusConfig(valid_fraction=0.99, progress=False))
    assert doc["domains"]["two"]["documents"] == 1 and doc["domains"]["two"]["valid_documents"] == 1


def _failing_documents(n_ok: int):
    for i in range(n_ok):
        yield f"document {i}"
    raise OSError("disk vanished")


def test_failed_build_leaves_no_output_and_keeps_an_old_corpus(tmp_path):
    out = tmp_path / "corpus"
    with pytest.raises(OSError, match="disk vanished"):
        build_corpus(out, {"ok": Documents(WEB), "bad": _failing_documents(5)}, CorpusConfig(progress=False))
    assert list(tmp_path.iterdir()) == []

    build_corpus(out, {"ok": Documents(WEB)}, CorpusConfig(progress=False))
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OSError):
        build_corpus(out, {"bad": _failing_documents(3)}, CorpusConfig(progress=False, force=True))
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]

    build_corpus(out, {"new": Documents(CODE)}, CorpusConfig(progress=False, force=True))
    assert list(load_corpus(out)["domains"]) == ["new"] and [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    _write_inputs(tmp_path / "in")
    web = f"web={tmp_path}/in/web/*.txt"
    out = str(tmp_path / "out")
    assert "expected NAME=GLOB" in _one_line_error(capsys, ["corpus", "build", "--out", out, "--domain", "webonly"])
    assert "no files match" in _one_line_error(capsys, ["corpus", "build", "--out", out, "--domain", "web=/nonexistent/*.txt"])
    assert "valid_fraction" in _one_line_error(capsys, ["corpus", "build", "--out", out, "--domain", web, "--valid-fraction", "1.5"])
    assert "name" in _one_line_error(capsys, ["corpus", "build", "--out", out, "--domain", f"a/b={tmp_path}/in/web/*.txt"])
    assert "cannot be a corpus folder name" in _one_line_error(
        capsys, ["corpus", "build", "--out", out, "--domain", f"..={tmp_path}/in/web/*.txt"])
    (tmp_path / "bad.json").write_text("{not json")
    assert "not a valid tokenizer.json" in _one_line_error(
        capsys, ["corpus", "build", "--out", out, "--domain", web, "--tokenizer", str(tmp_path / "bad.json")])
    assert "no .idx files" in _one_line_error(capsys, ["corpus", "stats", str(tmp_path / "in")])
    assert "does not exist" in _one_line_error(capsys, ["corpus", "stats", str(tmp_path / "nothing")])
    (tmp_path / "junk.idx").write_bytes(b"garbage" * 10)
    (tmp_path / "junk.bin").write_bytes(b"")
    assert "no MMIDIDX header" in _one_line_error(capsys, ["corpus", "stats", str(tmp_path / "junk")])
    main(["corpus", "build", "--out", str(tmp_path / "ok"), "--domain", web])
    capsys.readouterr()
    good = (tmp_path / "ok" / "web" / "train.idx").read_bytes()
    (tmp_path / "junk.idx").write_bytes(good[:-8])
    assert "truncated?" in _one_line_error(capsys, ["corpus", "stats", str(tmp_path / "junk")])
    (tmp_path / "junk.idx").write_bytes(good)
    assert "the pair is damaged or mismatched" in _one_line_error(capsys, ["corpus", "stats", str(tmp_path / "junk.idx")])
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    out = str(tmp_path / "out2")
    main(["corpus", "build", "--out", out, "--domain", web])
    capsys.readouterr()
    assert "exists and is not empty" in _one_line_error(capsys, ["corpus", "build", "--out", out, "--domain", web])


def test_progress_bar_on_request(tmp_path, capsys):
    _write_inputs(tmp_path / "in")
    main(["corpus", "build", "--out", str(tmp_path / "o"), "--domain", f"web={tmp_path}/in/web/*.txt", "--progress"])
    assert "corpus" in capsys.readouterr().err


def test_stats_reads_megatron_lm_style_indexes(tmp_path, capsys):
    """preprocess_data.py writes int32 for large vocabularies and several sequences (sentences) per document."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(tmp_path / "books_text_document")
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    b.add_document(np.array([70000, 5, 6, 1, 2], dtype=np.int32), [3, 2])
    b.add_document(np.array([9, 9, 9, 9], dtype=np.int32), [1, 3])
    b.add_document(np.array([4], dtype=np.int32), [1])
    b.finalize(prefix + ".idx")
    assert main(["corpus", "stats", prefix + ".bin", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["documents"], row["sequences"], row["tokens"], row["dtype"]) == (3, 5, 10, "int32")
    assert main(["corpus", "stats", str(tmp_path)]) == 0
    assert "3 documents, 10 tokens" in capsys.readouterr().out


def _train_hf_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(WEB + CODE, trainer)
    tok.save(str(path))
    return path


def test_hf_tokenizer_corpus_and_mismatch(tmp_path):
    tj = _train_hf_tokenizer(tmp_path / "tokenizer.json")
    hf = load_tokenizer(tj)
    assert hf.info.type == "hf" and hf.info.eod == 1 and hf.info.vocab_size <= 300 and len(hf.info.sha256) == 64
    doc = build_corpus(tmp_path / "hf", {"web": Documents(WEB), "code": Documents(CODE)},
                       CorpusConfig(tokenizer=str(tj), valid_fraction=0.2, progress=False))
    assert doc["tokenizer"]["type"] == "hf" and doc["tokenizer"]["eod"] == hf.info.eod

    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tj))
    ds = open_indexed(str(tmp_path / "hf" / "web" / "train"))
    texts = {raw.decode(ds[i][:-1].tolist()) for i in range(len(ds))}
    assert all(ds[i][-1] == hf.info.eod for i in range(len(ds)))
    assert texts <= set(WEB) and len(texts) == doc["domains"]["web"]["documents"]

    mix = Mixture.load(tmp_path / "hf" / "natural.json")
    built = build_datasets(mix, BlendConfig(seq_length=8, train_samples=20))
    assert built.tokenizer.same_ids_as(hf.info)
    assert int(max(int(built.train[i]["tokens"].max()) for i in range(20))) < hf.info.vocab_size

    # A mixture whose domains come from a byte corpus and an HF corpus is refused before any build.
    byte_dir, _ = make_tiny_corpus(tmp_path, 1)
    mixed = {"version": 1, "domains": [
        {"name": "web", "weight": 1, "prefixes": [str(tmp_path / "hf" / "web" / "train")]},
        {"name": "d0", "weight": 1, "prefixes": [str(byte_dir / "d0" / "train")]},
    ]}
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    with pytest.raises(TokenizerMismatchError, match=r"domains\[1\]\.prefixes\[0\].*rebuild all domains with one tokenizer"):
        build_datasets(Mixture.load(tmp_path / "mixed.json"), BlendConfig(seq_length=8, train_samples=10))


def test_library_rejects_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="wrap it in a list"):
        build_corpus(tmp_path / "x", {"web": "a/path.txt"}, CorpusConfig(progress=False))
    with pytest.raises(RegmixError, match="does not exist"):
        build_corpus(tmp_path / "x", {"web": [tmp_path / "missing.txt"]}, CorpusConfig(progress=False))
    with pytest.raises(RegmixError, match="no non-empty documents"):
        build_corpus(tmp_path / "x", {"web": Documents(["  ", "\n"])}, CorpusConfig(progress=False))
    with pytest.raises(ConfigError, match="doc_split"):
        CorpusConfig(doc_split="sentence")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.text(alphabet="abcdefgh ", min_size=1, max_size=12).filter(str.strip), min_size=2, max_size=12,
                     unique_by=str.strip),
       fraction=st.floats(0.001, 0.999))
def test_split_property_every_document_once_both_sides_nonempty(docs, fraction):
    with tempfile.TemporaryDirectory() as tmp:
        doc = build_corpus(Path(tmp) / "c", {"d": Documents(docs)}, CorpusConfig(valid_fraction=fraction, progress=False))
        train, valid = _documents(f"{tmp}/c/d/train"), _documents(f"{tmp}/c/d/valid")
    assert sorted(train + valid) == sorted(docs)
    assert train and valid
    assert doc["domains"]["d"]["documents"] == len(train) and doc["domains"]["d"]["valid_documents"] == len(valid)
