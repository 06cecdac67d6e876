"""The regmix.json loader and its commands: bad input (targeted and hypothesis-fuzzed), normalisation, atomic
writes, and exports that stock Megatron-LM's own argument parsing reads back."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regmix_plugin.cli import main
from regmix_plugin.export.registry import available as export_formats
from regmix_plugin.export.registry import export
from regmix_plugin.mixture import Mixture, MixtureError

GOOD = {
    "version": 1,
    "name": "m",
    "domains": [
        {"name": "web", "weight": 0.6, "prefixes": ["web/train"], "tokens": 100, "valid_prefixes": ["web/valid"]},
        {"name": "code", "weight": 0.4, "prefixes": ["code/train"]},
        {"name": "books", "weight": 0.0, "prefixes": ["books/train"], "valid_prefixes": ["books/valid"]},
    ],
}


def _apply(doc: dict, field: str, value) -> dict:
    *parents, last = field.split("__")
    target = doc
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    key = int(last) if isinstance(target, list) else last
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value
    return doc


def _doc(**changes) -> dict:
    doc = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        doc = _apply(doc, path, value)
    return doc


_DELETE = object()

# (file text, expected fragment of the one-line message)
BAD_FILES = {
    "malformed json": ('{"version": 1, "domains": [', "malformed JSON at line 1"),
    "not an object": ("[1, 2]", "<root>: expected a JSON object"),
    "weight is a string": (json.dumps(_doc(domains__0__weight="0.6")), "domains[0].weight: expected a number"),
    "weight is a bool": (json.dumps(_doc(domains__0__weight=True)), "domains[0].weight: expected a number"),
    "prefixes is a number": (json.dumps(_doc(domains__1__prefixes=5)), "domains[1].prefixes: expected a non-empty list"),
    "domains is an object": (json.dumps(_doc(domains={})), "domains: expected a list"),
    "name is a number": (json.dumps(_doc(domains__0__name=3)), "domains[0].name: expected a non-empty string"),
    "negative weight": (json.dumps(_doc(domains__1__weight=-0.2)), "domains[1].weight: -0.2 is negative"),
    "NaN weight": (json.dumps(_doc(domains__0__weight=float("nan"))), "NaN is not a valid JSON number"),
    "Infinity weight": (json.dumps(_doc(domains__0__weight=float("inf"))), "Infinity is not a valid JSON number"),
    "overflowing weight": (json.dumps(_doc()).replace('"weight": 0.6', '"weight": 1e999'), "domains[0].weight: inf is not finite"),
    "weights overflow their sum": (json.dumps(_doc(domains__0__weight=1.5e308, domains__1__weight=1.5e308)), "sum to infinity"),
    "huge integer weight": (json.dumps(_doc(domains__0__weight=10**400)), "domains[0].weight"),
    "all weights zero": (json.dumps(_doc(domains__0__weight=0, domains__1__weight=0)), "the weights sum to 0"),
    "empty domain list": (json.dumps(_doc(domains=[])), "domains: the list is empty"),
    "duplicate names": (json.dumps(_doc(domains__2__name="web")), "domains[2].name: 'web' duplicates domains[0]"),
    "unknown top key": (json.dumps({**_doc(), "weights": [1]}), "weights: unknown key"),
    "unknown domain key": (json.dumps(_doc(domains__1__wieght=1)), "domains[1].wieght: unknown key"),
    "missing weight": (json.dumps(_doc(domains__1__weight=_DELETE)), "domains[1].weight: missing"),
    "wrong version": (json.dumps(_doc(version=2)), "version: 2 is not supported"),
    "version true": (json.dumps(_doc(version=True)), "version: True is not supported"),
    "missing version": (json.dumps(_doc(version=_DELETE)), "version: missing"),
    "provenance is a string": (json.dumps(_doc(provenance="me")), "provenance: expected an object"),
    "bad normalization record": (json.dumps(_doc(normalization={"raw_sum": "x"})), "normalization.raw_sum"),
    "prefix with newline": (json.dumps(_doc(domains__0__prefixes=["a\nb"])), "domains[0].prefixes[0]"),
}


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmix_plugin", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _assert_one_line_error(stderr: str, fragment: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("regmix: error: "), stderr
    assert fragment in stderr, stderr


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_one_line_exit_2_and_exports_nothing(case, tmp_path, capsys):
    text, fragment = BAD_FILES[case]
    f = tmp_path / "mix.json"
    f.write_text(text)
    assert main(["validate", str(f)]) == 2
    _assert_one_line_error(capsys.readouterr().err, fragment)
    for fmt in export_formats():
        out = tmp_path / "sub" / "exported.txt"
        assert main(["export", str(f), "--format", fmt, "--out", str(out)]) == 2
        _assert_one_line_error(capsys.readouterr().err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.json"]


@pytest.mark.parametrize("case", ["malformed json", "NaN weight", "duplicate names"])
def test_real_console_command_prints_no_traceback(case, tmp_path):
    text, fragment = BAD_FILES[case]
    f = tmp_path / "mix.json"
    f.write_text(text)
    out = tmp_path / "exported.txt"
    r = _run_cli("export", str(f), "--format", "data-args", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and not out.exists()
    _assert_one_line_error(r.stderr, fragment)


def test_missing_files_with_check_files(tmp_path, capsys):
    for sub in ("web", "code", "books"):
        (tmp_path / sub).mkdir()
        for split in ("train", "valid"):
            for ext in (".bin", ".idx"):
                (tmp_path / sub / f"{split}{ext}").write_bytes(b"")
    (tmp_path / "books" / "valid.idx").unlink()
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(GOOD))
    assert main(["validate", str(f)]) == 0  # files are only checked when asked
    capsys.readouterr()
    assert main(["validate", str(f), "--check-files"]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"domains[2].valid_prefixes[0]: {tmp_path}/books/valid.idx does not exist")
    assert main(["validate", str(tmp_path / "absent.json")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "file not found")


def test_export_to_a_folder_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(GOOD))
    (tmp_path / "taken").mkdir()
    assert main(["export", str(f), "--format", "data-args", "--out", str(tmp_path / "taken")]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--out")
    assert list((tmp_path / "taken").iterdir()) == []


# ---- hypothesis: arbitrary damage to a valid document never crashes the loader -------------------------------
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)
FIELDS = ["version", "name", "domains", "provenance", "normalization", "extra",
          "domains__0__name", "domains__0__weight", "domains__0__prefixes", "domains__0__tokens",
          "domains__0__valid_prefixes", "domains__1__weight", "domains__1__prefixes", "domains__2__weight",
          "domains__1__name", "domains__2__test_prefixes", "domains__0__bogus"]


@st.composite
def damaged_dicts(draw) -> dict:
    """GOOD with one to three fields replaced by arbitrary JSON values or deleted."""
    doc = json.loads(json.dumps(GOOD))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        value = draw(st.one_of(st.just(_DELETE), JSON_VALUES, JSON_VALUES))
        with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
            doc = _apply(doc, field, value)
    return doc


@st.composite
def damaged_documents(draw) -> str:
    kind = draw(st.sampled_from(["dict", "dict", "dict", "text", "truncate"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "truncate":
        text = json.dumps(GOOD)
        return text[: draw(st.integers(0, len(text) - 1))]
    # allow_nan: NaN/Infinity literals are exactly the malformed input we want to feed in.
    return json.dumps(draw(damaged_dicts()), allow_nan=True)


@settings(max_examples=600, deadline=None)
@given(doc=damaged_dicts())
def test_fuzzed_dicts_raise_only_mixture_error(doc):
    try:
        mix = Mixture.from_dict(doc)
    except MixtureError as e:
        assert "\n" not in str(e)
        return
    assert math.isclose(sum(mix.weights), 1.0) and min(mix.weights) >= 0
    Mixture.from_dict(mix.to_dict())  # what we accept, we also write back in a form we accept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=damaged_documents(), fmt=st.sampled_from(["megatron-args", "data-args", "per-split-json"]))
def test_fuzzed_documents_load_or_fail_with_one_line(text, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "mix.json"
        f.write_text(text, encoding="utf-8")
        out = Path(tmp) / "out" / "export.txt"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc_validate = main(["validate", str(f)])
            rc_export = main(["export", str(f), "--format", fmt, "--out", str(out)])
        assert rc_validate == rc_export and rc_validate in (0, 2)
        if rc_validate == 2:
            lines = err.getvalue().splitlines()
            assert len(lines) == 2 and all(line.startswith("regmix: error: ") for line in lines), lines
            assert not out.exists() and not out.parent.exists()
        else:
            mix = Mixture.load(f)
            assert math.isclose(sum(mix.weights), 1.0) and min(mix.weights) >= 0
            assert out.read_text().strip() or fmt != "data-args"


# ---- normalisation and atomic writes --------------------------------------------------------------------------
def test_normalisation_is_recorded_and_survives_a_roundtrip(tmp_path, capsys):
    f = tmp_path / "raw.json"
    f.write_text(json.dumps(_doc(domains__0__weight=2, domains__1__weight=6, domains__2__weight=0)))
    mix = Mixture.load(f)
    assert mix.weights == [0.25, 0.75, 0.0]
    assert mix.normalization == {"raw_sum": 8, "normalized": True}
    mix.save(tmp_path / "saved.json")
    again = Mixture.load(tmp_path / "saved.json")
    assert again.weights == mix.weights and again.normalization == mix.normalization
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    assert "weights summed to 8; normalised to 1" in out and "weight 0 (evaluated, not trained on): books" in out
    already = Mixture.from_dict(_doc())
    assert already.normalization == {}


def test_save_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "mix.json"
    Mixture.from_dict(_doc()).save(path)
    before = path.read_bytes()
    new = Mixture.from_dict(_doc(name="new"))

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mix.json"]  # the temp file is gone too
    monkeypatch.undo()
    new.save(path)
    assert Mixture.load(path).name == "new"


def test_from_weights_keeps_template_prefixes_resolvable(tmp_path):
    f = tmp_path / "base.json"
    f.write_text(json.dumps(GOOD))
    base = Mixture.load(f)
    mix = Mixture.from_weights({"web": 1, "code": 3}, template=base, name="x")
    assert mix.weights == [0.25, 0.75] and mix.resolve("web/train") == str(tmp_path / "web" / "train")
    assert mix.domains[0].valid_prefixes == ["web/valid"] and mix.domains[0].tokens == 100


# ---- exports read back by stock Megatron-LM -------------------------------------------------------------------
def _megatron_data_args(argv: list[str]):
    """Parse with Megatron-LM's own --data-path/--data-args-path/--per-split-data-args-path definitions."""
    import argparse
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.training.arguments import _add_data_args
        from megatron.training.utils.common_utils import get_blend_and_blend_per_split

    parser = argparse.ArgumentParser(allow_abbrev=False)
    _add_data_args(parser)
    return get_blend_and_blend_per_split(parser.parse_args(argv))


def test_exports_parse_back_with_megatron(tmp_path, capsys):
    folder = tmp_path / "my data"  # a space in the path: the flags must be quoted
    folder.mkdir()
    f = folder / "mix.json"
    f.write_text(json.dumps(_doc(domains__1__prefixes=["code/a", "code/b"])))
    mix = Mixture.load(f)
    train_prefixes = [str(folder / p) for p in ("web/train", "code/a", "code/b")]
    train_weights = [0.6, 0.2, 0.2]

    assert main(["export", str(f), "--format", "megatron-args"]) == 0
    line = capsys.readouterr().out
    blend, per_split = _megatron_data_args(shlex.split(line))
    assert per_split is None and blend[0] == train_prefixes and blend[1] == pytest.approx(train_weights)

    with pytest.raises(MixtureError, match="whitespace"):
        export(mix, "data-args")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "mix.json").write_text(f.read_text())
    out = tmp_path / "data_args.txt"
    assert main(["export", str(plain / "mix.json"), "--format", "data-args", "--out", str(out)]) == 0
    blend, _ = _megatron_data_args(["--data-args-path", str(out)])
    assert blend[0] == [str(plain / p) for p in ("web/train", "code/a", "code/b")]
    assert blend[1] == pytest.approx(train_weights)

    out = tmp_path / "per_split.json"
    assert main(["export", str(f), "--format", "per-split-json", "--out", str(out)]) == 0
    blend, per_split = _megatron_data_args(["--per-split-data-args-path", str(out)])
    assert blend is None
    train, valid, test = per_split
    assert train[0] == train_prefixes and train[1] == pytest.approx(train_weights)
    # Validation sets of every domain that has one, weight-0 domains included, weighted equally.
    assert valid[0] == [str(folder / "web/valid"), str(folder / "books/valid")] and valid[1] == [1.0, 1.0]
    assert test == valid


def _bridge_override_value(line: str) -> str:
    """What Megatron-Bridge's ``parse_hydra_overrides`` makes of one printed override line: the shell's word,
    parsed by Hydra's own ``OverridesParser`` and applied to an OmegaConf config the way Bridge applies it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    words = shlex.split(line)
    assert len(words) == 1, words  # one shell word: the whole override
    parsed = OverridesParser.create().parse_overrides(overrides=words)
    assert not parsed[0].is_sweep_override()
    cfg = OmegaConf.create({"dataset": {"data_path": None}})
    OmegaConf.set_struct(cfg, True)
    ConfigLoaderImpl._apply_overrides_to_config(overrides=parsed, cfg=cfg)
    return cfg.dataset.data_path


class _StandInBridgeConfig:
    """Megatron-Bridge cannot be imported on CPU (its package imports transformer_engine; DECISIONS 29). These
    stand in for ``megatron.bridge.training.config``'s two dataset configs with the behaviour the printed lines
    depend on (Bridge 0.2-0.6): ``GPTDatasetConfig`` finalizes into megatron-core's config, and
    ``MockGPTDatasetConfig``, a subclass with no fields of its own, refuses a blend or blend_per_split."""

    class GPTDatasetConfig:
        def __init__(self, **settings):
            self.__dict__.update(settings)

        def finalize(self, **core_settings):
            from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

            return GPTDatasetConfig(blend=self.blend, blend_per_split=self.blend_per_split, split=self.split,
                                    **core_settings)

    class MockGPTDatasetConfig(GPTDatasetConfig):
        def finalize(self, **core_settings):
            if self.__dict__.get("blend") or self.__dict__.get("blend_per_split"):
                raise TypeError("got an unexpected keyword argument 'blend_per_split'")
            return super().finalize(**core_settings)


def test_bridge_export_is_read_the_way_bridge_reads_it(tmp_path, capsys, monkeypatch):
    """The override goes through Hydra's parser and OmegaConf as Bridge applies it, then megatron-core's
    ``get_blend_from_list`` (GPTDatasetConfig.finalize's reading of data_path); ``blend_per_split`` through
    megatron-core's GPTDatasetConfig and dataset builder. The data sits under a folder whose name has a comma,
    a quote and a dollar sign: unquoted, the comma made Hydra read the override as a sweep."""
    import sys
    import types

    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset
    from megatron.core.datasets.utils import get_blend_from_list
    from proxy_helpers import make_corpus, write_mixture

    from regmix_plugin.data.tokenizer import infer_tokenizer

    corpus = tmp_path / "runs,v2 \"q\" ${HOME}".replace(" ", "_")
    make_corpus(corpus, ("web", "code", "books"), docs=24)
    path = write_mixture(corpus, "mix", {"web": 0.6, "code": 0.4})  # books: weight 0
    assert main(["export", str(path), "--format", "bridge"]) == 0
    text = capsys.readouterr().out
    mix = Mixture.load(path)

    override = next(ln for ln in text.splitlines() if "dataset.data_path=" in ln and not ln.startswith("#"))
    prefixes, weights = get_blend_from_list(_bridge_override_value(override).split())
    assert prefixes == [str(corpus / "web/train"), str(corpus / "code/train")]
    assert weights == pytest.approx([0.6, 0.4])

    bridge_config = types.ModuleType("megatron.bridge.training.config")
    bridge_config.GPTDatasetConfig = _StandInBridgeConfig.GPTDatasetConfig
    bridge_config.MockGPTDatasetConfig = _StandInBridgeConfig.MockGPTDatasetConfig
    monkeypatch.setitem(sys.modules, "megatron.bridge.training.config", bridge_config)
    python = "\n".join(ln for ln in text.splitlines()[text.splitlines().index(override) + 1:] if not ln.startswith("#"))
    core = dict(random_seed=1, sequence_length=16, tokenizer=infer_tokenizer(mix), reset_position_ids=False,
                reset_attention_mask=False, eod_mask_loss=False, path_to_cache=str(tmp_path / "cache"),
                drop_last_partial_validation_sequence=False)
    # A recipe's real dataset config, and a mock-data recipe's (which refuses blends until converted).
    for recipe_dataset in (bridge_config.GPTDatasetConfig(split="9999,8,2", blend=None, blend_per_split=None),
                           bridge_config.MockGPTDatasetConfig(split="9999,8,2")):
        cfg = types.SimpleNamespace(dataset=recipe_dataset)
        exec(python, {"cfg": cfg})
        assert type(cfg.dataset) is bridge_config.GPTDatasetConfig and cfg.dataset.data_path is None
        config = cfg.dataset.finalize(**core)
        train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, [32, None, None], lambda: True, config).build()
        assert len(train) >= 32 and set(train.dataset_index.tolist()) == {0, 1}  # web and code only
        domains = json.loads((corpus / "corpus.json").read_text())["domains"]
        # Every domain's held-out set (books included), each read in full: one epoch of 16-token sequences.
        assert len(valid) == sum(math.ceil((domains[d]["valid_tokens"] - 1) / 16) for d in ("web", "code", "books"))
        assert len(test) == sum((domains[d]["valid_tokens"] - 1) // 16 for d in ("web", "code", "books"))


@pytest.mark.parametrize("value", ["0.5 /data/a,b 0.5 /data/c", "1 /d/it's", '1 /d/say "hi"', "1 /d/${oc.env:HOME}",
                                   "1 /d/[x]=y:z", "1 /d/,'\"${", "1 /d/{a: b}"])
def test_bridge_override_value_survives_hydra_and_omegaconf(value):
    import shlex as _shlex

    from regmix_plugin.export.bridge import hydra_quoted

    assert _bridge_override_value(_shlex.quote("dataset.data_path=" + hydra_quoted(value))) == value


@pytest.mark.parametrize("folder,says", [("with space", "whitespace"), ("back\\slash", "backslash")])
def test_bridge_export_refuses_what_cannot_be_quoted(tmp_path, capsys, folder, says):
    from proxy_helpers import make_corpus, write_mixture

    make_corpus(tmp_path / folder, ("web", "code"), docs=8)
    path = write_mixture(tmp_path / folder, "mix", {"web": 0.6, "code": 0.4})
    assert main(["export", str(path), "--format", "bridge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format bridge" in err and says in err


def test_building_a_mixture_changes_nothing_it_was_given():
    # Normalising once rescaled the caller's Domain objects, and with_provenance changed the mixture it was
    # called on; both now return new objects.
    from regmix_plugin.mixture import Domain

    doms = [Domain(name="a", weight=2.0, prefixes=["a"]), Domain(name="b", weight=2.0, prefixes=["b"])]
    norm = {"note": "kept"}
    mix = Mixture(domains=doms, normalization=norm)
    assert [d.weight for d in doms] == [2.0, 2.0] and norm == {"note": "kept"}
    assert mix.weights == [0.5, 0.5] and mix.normalization["raw_sum"] == 4.0
    tagged = mix.with_provenance(tool="test")
    assert mix.provenance == {} and tagged.provenance["tool"] == "test" and tagged.weights == mix.weights
