"""One reader of user-written YAML (config_schema.read_yaml_file): every file a user writes in YAML fails the
same way, in one line that names the file, and through the CLI with exit 2 and nothing written."""

from __future__ import annotations

import argparse

import pytest

from regmix_plugin.cli import main
from regmix_plugin.config_schema import read_yaml_file
from regmix_plugin.errors import ConfigError
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.schedule import Schedule
from regmix_plugin.synthesize.commands import _synth_flags, synth_config_from_args
from regmix_plugin.sweep.study import load_study


def _synth(path):
    """`regmix synthesize --config PATH` with no other flags."""
    flags = {name: None for name in _synth_flags()}
    return synth_config_from_args(argparse.Namespace(config=str(path), nonzero=None, no_max_usage=False, **flags))


# Each user-written YAML file, read the way its command reads it, and the label its errors start with.
READERS = {
    "study": (load_study, "{path}: "),
    "schedule": (Schedule.load, "--schedule {path}: "),
    "constraints": (Constraints.load, "--constraints {path}: "),
    "proxy config": (ProxyConfig.load, "--config {path}: "),
    "sampler settings": (_synth, "--config {path}: "),
}


def _cases(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases: [\n  {start: 0\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    return {"missing": (tmp_path / "nope.yaml", "not found; "), "bad YAML": (bad, "not valid YAML (line "),
            "not UTF-8": (binary, "cannot read ("), "a folder": (folder, "cannot read (")}


@pytest.mark.parametrize("reader", READERS)
def test_every_user_yaml_file_fails_in_one_line_naming_the_file(tmp_path, reader):
    load, label = READERS[reader]
    for case, (path, says) in _cases(tmp_path).items():
        with pytest.raises(ConfigError) as e:
            load(path)
        msg = str(e.value)
        assert msg.startswith(label.format(path=path)), (case, msg)
        assert says in msg and "\n" not in msg, (case, msg)


def test_the_reader_reports_the_line_and_problem_and_reads_an_empty_file_as_none(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"^X: not valid YAML \(line 3: expected ',' or '\]', but got ':'\); fix the syntax$"):
        read_yaml_file(bad, "X")
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert read_yaml_file(empty, "X") is None


def test_a_broken_study_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("name: [unclosed\n")
    assert main(["sweep", str(study), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"regmix: error: {study}: not valid YAML (line 2: ") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # nothing written
