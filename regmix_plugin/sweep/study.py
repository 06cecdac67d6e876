"""The study YAML: which domains, which proxy config, which mixtures, which command, which backend.

Example (``megatron_configs/study-tiny.yaml``)::

    name: tiny
    base_mixture: ../corpus/natural.json   # the domains (and their prefixes); paths are relative to this file
    proxy_config: proxy-tiny.yaml          # substituted for {config}
    mixtures: mixtures/                    # a folder of n*.json (and heldout/h*.json) ...
    synthesize: {n: 32, heldout: 4, seed: 0}   # ... or synthesis settings (written to <out>/mixtures)
    out: ../runs/tiny                      # run directories go to <out>/runs/<run_id>/
    command: "{python} -m regmix_plugin train --mixture {mixture} --config {config} --run-dir {run_dir}"
    env: {OMP_NUM_THREADS: "1"}
    runs: {retries: 1, timeout_s: 3600}
    backend: local                         # or slurm
    local: {max_concurrent: 2, preload: auto}   # preload: fork runs from one process that imported torch
    slurm: {partition: debug, cpus_per_task: 1, mem: 2G, time: "01:00:00", array_parallelism: 16}
    repetition: {target_tokens: 2.5e10}    # proxies repeat small domains as the target will (synthesize/repetition.py)
    reuse: reuse/plan.json                 # a reduced study of `regmix reuse plan` (docs/reuse.md)

Placeholders in ``command``: ``{python}`` (this interpreter), ``{mixture}`` (the run's ``mixture.json``),
``{schedule}`` (a schedule study's ``schedule/schedule.yaml``: its phases as fractions of training),
``{config}``, ``{run_dir}``, ``{run_id}``, ``{study_dir}``. Values are shell-quoted; the command runs under
``bash -c`` in the study file's folder. A Megatron launch looks like
``torchrun ... pretrain_gpt.py ... --data-mixture-from {mixture} --save {run_dir}/checkpoints``.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from regmix_plugin.config_schema import Choice, Number, PathText, Text, config, read_yaml_file, validate
from regmix_plugin.errors import ConfigError
from regmix_plugin.io import atomic_write_text
from regmix_plugin.sweep.backend import available as available_backends
from regmix_plugin.sweep.local import LocalConfig
from regmix_plugin.sweep.slurm import SlurmConfig
from regmix_plugin.synthesize.config import SynthConfig
from regmix_plugin.synthesize.repetition import RepetitionConfig

DEFAULT_COMMAND = "{python} -m regmix_plugin train --mixture {mixture} --config {config} --run-dir {run_dir}"
PLACEHOLDERS = ("python", "mixture", "config", "run_dir", "run_id", "study_dir", "schedule")
# A study of multi-phase schedules (synthesize.phases, or a folder of schedules) trains each with this command.
SCHEDULE_COMMAND = "{python} -m regmix_plugin train --schedule {schedule} --config {config} --run-dir {run_dir}"


_SAYS = "expected {expect}, got {value}"


@config(prefix="runs")
class RunPolicy:
    """How each run is supervised."""

    retries: Number(integer=True, ge=0) = 1  # failed attempts retried this many times (so up to retries + 1 attempts)
    timeout_s: Number(ge=1) | None = None  # wall-clock limit per attempt; the run is killed and recorded as failed
    stale_lock_s: Number(ge=60) = 600.0  # a lock held from another host with no heartbeat this long is dead


@config
class Study:
    """A study file. Paths are as written until :func:`study_from_dict` resolves them against the file's
    folder (``study_dir``)."""

    name: Text
    base_mixture: PathText
    proxy_config: PathText | None = None
    mixtures: PathText | None = None
    synthesize: SynthConfig | None = None
    out: PathText | None = None  # default: <study_dir>/<name>
    command: Text = DEFAULT_COMMAND
    env: dict[Any, Any] = field(default_factory=dict)  # values become strings (YAML reads 1 as an int)
    runs: RunPolicy = field(default_factory=RunPolicy)
    backend: Choice(available_backends) = "local"  # a name in the backend registry (sweep/backend.py)
    local: LocalConfig = field(default_factory=LocalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    reuse: PathText | None = None  # a reuse plan: mixtures are over its reduced domains, runs get the full ones
    study_dir: Path = field(default=Path("."), init=False)  # not a key of the file: where it lies

    def __post_init__(self) -> None:
        _need(self.name.strip() != "" and "/" not in self.name,
              f"name: expected a non-empty name without '/', got {self.name!r}")
        _need((self.mixtures is None) != (self.synthesize is None),
              "mixtures/synthesize: give exactly one: a folder of mixture files, or synthesis settings")
        _need(self.command.strip() != "", "command: expected a command template")
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(self.command) if f is not None}
        except ValueError as e:
            raise ConfigError(f"command: bad template ({e}); escape literal braces as {{{{ and }}}}") from None
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            names = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ConfigError(f"command: unknown placeholder {{{unknown[0]}}}; use {names}")
        _need("config" not in used or self.proxy_config is not None,
              "proxy_config: the command uses {config}; set proxy_config to the proxy model's YAML")
        phased = self.synthesize is not None and bool(self.synthesize.phases)
        if phased and self.command == DEFAULT_COMMAND:  # the default command, for schedules
            self.command = SCHEDULE_COMMAND
            used = (used - {"mixture"}) | {"schedule"}
        if phased:
            _need("schedule" in used, "command: synthesize.phases makes schedules; pass --schedule {schedule} "
                                      f"(e.g. command: \"{SCHEDULE_COMMAND}\")")
        else:
            _need("mixture" in used or "schedule" in used,
                  "command: the template never passes {mixture}; add --mixture {mixture} "
                  "(or --data-mixture-from {mixture} for Megatron)")
        self.env = {str(k): str(v) for k, v in self.env.items()}
        if self.local.preload is True:
            from regmix_plugin.sweep.runner import can_run_inprocess

            _need(can_run_inprocess(self.command),
                  "local.preload: true needs a command of the form '{python} -m regmix_plugin ...' with no shell "
                  "operators; set preload: auto or false")

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def load_study(path: str | Path) -> Study:
    path = Path(path)
    data = read_yaml_file(path, str(path), "study file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of study settings")
    try:
        return study_from_dict(data, path.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# Sections that may be left empty in the file (`local:` with nothing under it): their defaults apply.
_SECTIONS = ("runs", "local", "slurm", "repetition")


def study_from_dict(data: dict[str, Any], study_dir: Path) -> Study:
    data = {k: v for k, v in data.items() if not (v is None and k in _SECTIONS)}
    study = validate(Study, data)
    study.study_dir = study_dir
    for key in ("base_mixture", "proxy_config", "mixtures", "out", "reuse"):
        if getattr(study, key) is not None:
            setattr(study, key, (study_dir / getattr(study, key)).resolve())
    study.out = study.out or (study_dir / study.name).resolve()
    return study


def trainer_command(*extra: str) -> str:
    """The default trainer command with more ``regmix train`` arguments, each a literal: shell-quoted, and its
    braces doubled so that the study's ``str.format`` placeholders leave it alone."""
    literals = [shlex.quote(a).replace("{", "{{").replace("}", "}}") for a in extra]
    return " ".join([DEFAULT_COMMAND, *literals])


def write_study(path: str | Path, settings: dict[str, Any]) -> Path:
    """Write ``settings`` as a study file at ``path`` after validating them as :func:`load_study` will read them
    (relative paths against the file's folder), so a tool that writes a study never writes one that fails."""
    path = Path(path)
    study_from_dict(dict(settings), path.resolve().parent)
    return atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))
