"""Adding an export format or a sweep backend is one module: here each is defined in this test module, with
nothing in regmix_plugin changed, and used through the same commands a user types (`regmix export`,
`regmix sweep`). The fixtures unregister them again, so the CLI is as pinned for the other tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from regmix_plugin.cli import main
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.export import registry as exports
from regmix_plugin.mixture import Mixture
from regmix_plugin.sweep import backend as backends
from regmix_plugin.sweep.state import COMPLETED, FAILED
from sweep_helpers import write_base, write_study


@pytest.fixture
def toy_format():
    @exports.register("toy-csv")
    def toy_csv(mix: Mixture, base_dir: str | None = None) -> str:
        """One ``domain,weight`` line per trained domain."""
        return "".join(f"{d.name},{d.weight:g}\n" for d in mix.domains if d.weight > 0)

    yield toy_csv
    exports.FORMATS.unregister("toy-csv")


class InlineBackend:
    """The smallest backend: each unfinished run's supervisor, one after another, as a child process."""

    started: list[str] = []

    def run(self, prep, progress: bool = True) -> None:
        for run_id, state in prep.states().items():
            if state not in (COMPLETED, FAILED):
                InlineBackend.started.append(run_id)
                subprocess.run([sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), run_id],
                               stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def toy_backend():
    backends.register("inline")(InlineBackend)
    InlineBackend.started = []
    yield InlineBackend
    backends.BACKENDS.unregister("inline")


def test_a_toy_export_format_is_a_format_choice_of_regmix_export(tmp_path, toy_format, capsys):
    base = write_base(tmp_path)
    assert exports.available() == ["megatron-args", "data-args", "per-split-json", "bridge", "climb", "toy-csv"]
    out = tmp_path / "weights.csv"
    assert main(["export", str(base), "--format", "toy-csv", "--out", str(out)]) == 0
    weights = dict(line.split(",") for line in out.read_text().splitlines())
    mix = Mixture.load(base)
    assert {d: float(w) for d, w in weights.items()} == pytest.approx(dict(zip(mix.names, mix.weights)), abs=1e-6)
    assert main(["export", str(base), "--format", "toy-csv"]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_an_unknown_format_lists_the_registered_ones(tmp_path, capsys):
    base = write_base(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["export", str(base), "--format", "toy-csv"])
    assert e.value.code == 2 and "invalid choice: 'toy-csv'" in capsys.readouterr().err
    with pytest.raises(Exception, match=r"^--format: unknown value 'toy-csv'; choose one of megatron-args, data-args, "
                                        r"per-split-json, bridge, climb$"):
        exports.export(Mixture.load(base), "toy-csv")


def test_a_toy_backend_runs_a_study_and_its_rerun_resumes(tmp_path, toy_backend):
    study = write_study(tmp_path / "study", n=3, heldout=1, backend="inline")
    out = tmp_path / "study" / "out"
    assert main(["sweep", str(study), "--no-progress"]) == 0
    assert sorted(toy_backend.started) == ["h0001", "n0001", "n0002", "n0003"]
    df, _ = collect([out])
    assert (df["status"] == "completed").all() and df["valid/web/loss"].notna().all()
    assert json.loads((out / "runs" / "n0001" / "status.json").read_text())["state"] == "completed"

    # A rerun hands the backend nothing to start; `--backend` takes the registered name too.
    toy_backend.started = []
    assert main(["sweep", str(study), "--no-progress", "--backend", "inline"]) == 0
    assert toy_backend.started == []


def test_a_study_naming_an_unregistered_backend_is_one_line_listing_the_registered_ones(tmp_path, capsys):
    study = write_study(tmp_path / "study", n=2, heldout=0, backend="inline")
    assert main(["sweep", str(study), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"regmix: error: {study}: backend: unknown value 'inline'; choose one of local, slurm\n"
    assert not (tmp_path / "study" / "out").exists()
