"""Every file a user writes, damaged at random, loads or fails with one line (hypothesis).

Each test starts from a valid file, damages one spot (a value replaced by any YAML value, a key added or
removed, the whole document replaced, or the text cut short) and loads it the way its command does. The
only failure allowed is a RegmixError of one line, which ``regmix`` prints as one line with exit code 2
(checked once per loader through ``main`` below); any other exception is a traceback for the user.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import REPO

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.continual.replay import ContinualPlan
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.reuse_plan import ReusePlan
from regmix_plugin.schedule import Schedule
from regmix_plugin.sweep.study import load_study
from regmix_plugin.synthesize.sampler import MANIFEST, SynthConfig, manifest_mixtures

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                      max_leaves=6)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _json(doc) -> str:
    return json.dumps(doc)  # NaN and Infinity included: files do get them


@st.composite
def damaged(draw, good: dict, dump=yaml.safe_dump) -> str:
    """The text (YAML, or what ``dump`` writes) of ``good`` with one spot damaged."""
    doc = copy.deepcopy(good)
    how = draw(st.sampled_from(["replace", "replace", "replace", "add", "remove", "whole", "cut"]))
    if how == "whole":
        return dump(draw(VALUES))
    if how == "cut":
        text = dump(doc)
        return text[: draw(st.integers(0, len(text)))]
    node = doc
    while True:  # walk down to a random mapping or list, then damage one of its entries
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if how == "replace":
            node[key] = draw(VALUES)
        elif how == "remove":
            del node[key]
        break
    if how == "add" and isinstance(node, dict):
        node[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return dump(doc)


def _loads_or_one_line(load, text: str, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        try:
            return load(path)
        except RegmixError as e:
            assert str(e).strip() and "\n" not in str(e), str(e)
            return None


GOOD_CONSTRAINTS = {"min": {"web": 0.1}, "max": {"code": 0.5}, "fixed": {"books": 0.05}, "target_tokens": 1.0e9,
                    "max_epochs": {"web": 2, "code": 4}, "tokens": {"web": 2.0e8},
                    "prior_pull": {"kind": "kl", "strength": 0.01}}


@FUZZ
@given(text=damaged(GOOD_CONSTRAINTS))
def test_fuzzed_constraints(text):
    _loads_or_one_line(Constraints.load, text, "constraints.yaml")


GOOD_STUDY = {"name": "toy", "base_mixture": "natural.json", "proxy_config": "proxy.yaml",
              "synthesize": {"n": 4, "heldout": 1, "seed": 7, "minimum": 0.001, "nonzero": ["web"],
                             "prior_weights": {"web": 1.0}, "target_tokens": 1.0e9},
              "out": "out", "env": {"OMP_NUM_THREADS": "1"}, "runs": {"retries": 1, "timeout_s": 60},
              "backend": "local", "local": {"max_concurrent": 2, "preload": "auto"},
              "slurm": {"partition": "debug", "cpus_per_task": 1, "extra_directives": ["--constraint=a100"]},
              "repetition": {"target_tokens": 2.5e10, "seed": 0}}


@FUZZ
@given(text=damaged(GOOD_STUDY))
def test_fuzzed_study(text):
    _loads_or_one_line(load_study, text, "study.yaml")


GOOD_PROXY = yaml.safe_load((REPO / "megatron_configs" / "proxy-tiny-cpu.yaml").read_text())


@FUZZ
@given(text=damaged(GOOD_PROXY))
def test_fuzzed_proxy_config(text):
    _loads_or_one_line(ProxyConfig.load, text, "proxy.yaml")


def _synth_options(path: Path) -> SynthConfig:
    # `regmix synthesize --config`: a YAML mapping of sampler settings
    from regmix_plugin.cli import build_parser
    from regmix_plugin.synthesize.commands import synth_config_from_args

    args = build_parser().parse_args(["synthesize", "base.json", "--out", "x", "--config", str(path)])
    return synth_config_from_args(args)


@FUZZ
@given(text=damaged(GOOD_STUDY["synthesize"]))
def test_fuzzed_synthesis_options(text):
    _loads_or_one_line(_synth_options, text, "synth.yaml")


GOOD_SCHEDULE = {"phases": [{"start": 0, "mixture": "a.json"}, {"start": 100, "mixture": "sub/b.json"}]}


@FUZZ
@given(text=damaged(GOOD_SCHEDULE))
def test_fuzzed_schedule(text):
    _loads_or_one_line(Schedule.load, text, "schedule.yaml")


GOOD_PLAN = {"version": 1, "original_mixture": "/d/orig.json", "new_mixture": "/d/new.json", "base_ckpt": "/d/ckpt",
             "proportions": [0.0, 0.5, 1.0], "mixtures": ["mixtures/p0.000.json", "mixtures/p0.500.json",
                                                          "mixtures/p1.000.json"], "base_run": None}


@FUZZ
@given(text=damaged(GOOD_PLAN, _json))
def test_fuzzed_continual_plan(text):
    _loads_or_one_line(ContinualPlan.load, text, "continual.json")


GOOD_MANIFEST = {"version": 1, "tool": "regmix synthesize", "config_digest": "abc", "domains": ["web", "code"],
                 "mixtures": [{"run_id": "n0001", "split": "train", "file": "n0001.json", "hash": "f00"},
                              {"run_id": "h0001", "split": "heldout", "file": "heldout/h0001.json", "hash": "b4r"}]}


@FUZZ
@given(text=damaged(GOOD_MANIFEST, _json))
def test_fuzzed_synthesis_manifest(text):
    # a study's `mixtures:` folder is read through its manifest
    _loads_or_one_line(lambda path: manifest_mixtures(path.parent), text, MANIFEST)


GOOD_REUSE_PLAN = {"version": 1, "tool": "regmix reuse plan", "regmix_version": "0.1.0", "frozen_name": "frozen",
                   "frozen": {"d0": 0.6, "d1": 0.4}, "free": ["d2", "d3"], "added": ["d3"], "updated": [],
                   "removed": [], "old_mixture": {"path": "/old.json", "name": "old"}, "old_runs": None,
                   "notes": ["d3: added"], "full_base_file": "full_base.json", "reduced_base_file": "base.json"}


@FUZZ
@given(text=damaged(GOOD_REUSE_PLAN, _json))
def test_fuzzed_reuse_plan(text):
    _loads_or_one_line(ReusePlan.load, text, "plan.json")


@pytest.mark.parametrize("text, message", [
    ("max_epochs: four\n", "max_epochs: expected a number, got 'four'"),
    ("max_epochs: -3\n", "max_epochs: -3 must be a number >= 0"),  # it once blamed min.<domain>
    ("max_epochs: {web: [2]}\n", "max_epochs.web: expected a number, got list"),
])
def test_constraint_holes_name_the_field(tmp_path, text, message):
    path = tmp_path / "constraints.yaml"
    path.write_text(text)
    with pytest.raises(RegmixError) as e:
        Constraints.load(path)
    assert str(e.value) == f"--constraints {path}: {message}"


@pytest.mark.parametrize("argv, text, fragment", [
    (["sweep", "{path}", "--prepare-only"], "name: toy\nbase_mixture: [1]\n", "base_mixture: expected a path string"),
    (["train", "--config", "{path}", "--mixture", "m.json", "--run-dir", "r"], "train: {steps: many}\n",
     "train.steps: expected an integer, got 'many'"),
    (["synthesize", "base.json", "--out", "x", "--config", "{path}"], "n: -1\n", "synthesize.n: -1 must be >= 1"),
])
def test_commands_print_one_line_and_exit_2(tmp_path, capsys, argv, text, fragment):
    path = tmp_path / "file.yaml"
    path.write_text(text)
    assert main([a.format(path=path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: ") and err.count("\n") == 1 and fragment in err, err
