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
    repetition: {target_tokens: 2.5e10}    # proxies repeat small domains as the target will (sweep/repetition.py)
    reuse: reuse/plan.json                 # a reduced study of `regmix reuse plan` (docs/reuse.md)

Placeholders in ``command``: ``{python}`` (this interpreter), ``{mixture}`` (the run's ``mixture.json``),
``{config}``, ``{run_dir}``, ``{run_id}``, ``{study_dir}``. Values are shell-quoted; the command runs under
``bash -c`` in the study file's folder. A Megatron launch looks like
``torchrun ... pretrain_gpt.py ... --data-mixture-from {mixture} --save {run_dir}/checkpoints``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from regmix_plugin.errors import ConfigError, check_choice
from regmix_plugin.sweep.repetition import RepetitionConfig
from regmix_plugin.sweep.synthesize import SynthConfig

DEFAULT_COMMAND = "{python} -m regmix_plugin train --mixture {mixture} --config {config} --run-dir {run_dir}"
PLACEHOLDERS = ("python", "mixture", "config", "run_dir", "run_id", "study_dir")
BACKENDS = ("local", "slurm")


def _from_mapping(cls, data: Any, where: str):
    """Build a config dataclass from a YAML mapping; unknown keys are an error that lists the known ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(known)}")
    return cls(**data)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _number(where: str, value: Any, minimum: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum
    _need(ok, f"{where}: expected a number >= {minimum}, got {value!r}")


@dataclass
class RunPolicy:
    """How each run is supervised."""

    retries: int = 1  # failed attempts retried this many times (so up to retries + 1 attempts)
    timeout_s: float | None = None  # wall-clock limit per attempt; the run is killed and recorded as failed
    stale_lock_s: float = 600.0  # a lock held from another host with no heartbeat this long is dead

    def __post_init__(self) -> None:
        _need(isinstance(self.retries, int) and not isinstance(self.retries, bool) and self.retries >= 0,
              f"runs.retries: expected an integer >= 0, got {self.retries!r}")
        _number("runs.timeout_s", self.timeout_s, 1, allow_none=True)
        _number("runs.stale_lock_s", self.stale_lock_s, 60)


@dataclass
class LocalConfig:
    max_concurrent: int = 1  # runs at once on this machine
    # Fork runs from a process that imported torch and megatron-core once ("auto": when the command is
    # `{python} -m regmix_plugin ...`; see regmix_plugin/sweep/local.py).
    preload: bool | str = "auto"

    def __post_init__(self) -> None:
        _need(isinstance(self.max_concurrent, int) and self.max_concurrent >= 1,
              f"local.max_concurrent: expected an integer >= 1, got {self.max_concurrent!r}")
        _need(self.preload in (True, False, "auto"),
              f"local.preload: expected true, false or auto, got {self.preload!r}")


@dataclass
class SlurmConfig:
    """Per-task resources of the job array (each task runs one mixture)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int = 1
    mem: str | None = None  # e.g. "4G"
    time: str | None = None  # e.g. "01:00:00"
    gpus_per_task: int = 0
    array_parallelism: int | None = None  # at most this many tasks at once (the %N of --array)
    extra_directives: list[str] = field(default_factory=list)  # more "#SBATCH ..." lines, e.g. "--constraint=a100"
    setup: str = ""  # shell lines run before the task (module load ..., source venv)
    wait: bool = True  # wait for the array to finish (a progress bar), or submit and return
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        _need(isinstance(self.cpus_per_task, int) and self.cpus_per_task >= 1,
              f"slurm.cpus_per_task: expected an integer >= 1, got {self.cpus_per_task!r}")
        _need(isinstance(self.gpus_per_task, int) and self.gpus_per_task >= 0,
              f"slurm.gpus_per_task: expected an integer >= 0, got {self.gpus_per_task!r}")
        _need(self.array_parallelism is None or (isinstance(self.array_parallelism, int) and self.array_parallelism >= 1),
              f"slurm.array_parallelism: expected an integer >= 1, got {self.array_parallelism!r}")
        _need(isinstance(self.extra_directives, list) and all(isinstance(x, str) for x in self.extra_directives),
              "slurm.extra_directives: expected a list of strings such as '--constraint=a100'")
        _number("slurm.poll_s", self.poll_s, 0.1)


@dataclass
class Study:
    name: str
    base_mixture: Path
    out: Path
    study_dir: Path
    mixtures: Path | None = None
    synthesize: SynthConfig | None = None
    proxy_config: Path | None = None
    command: str = DEFAULT_COMMAND
    env: dict[str, str] = field(default_factory=dict)
    runs: RunPolicy = field(default_factory=RunPolicy)
    backend: str = "local"
    local: LocalConfig = field(default_factory=LocalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    reuse: Path | None = None  # a reuse plan: mixtures are over its reduced domains, runs get the full ones

    def __post_init__(self) -> None:
        _need(isinstance(self.name, str) and self.name.strip() != "" and "/" not in self.name,
              f"name: expected a non-empty name without '/', got {self.name!r}")
        check_choice("backend", self.backend, BACKENDS)
        _need((self.mixtures is None) != (self.synthesize is None),
              "mixtures/synthesize: give exactly one: a folder of mixture files, or synthesis settings")
        _need(isinstance(self.command, str) and self.command.strip() != "", "command: expected a command template")
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
        _need("mixture" in used, "command: the template never passes {mixture}; add --mixture {mixture} "
                                 "(or --data-mixture-from {mixture} for Megatron)")
        _need(isinstance(self.env, dict), "env: expected a mapping of environment variables")
        self.env = {str(k): str(v) for k, v in self.env.items()}
        if self.local.preload is True:
            from regmix_plugin.sweep.runner import can_run_inprocess

            _need(can_run_inprocess(self.command),
                  "local.preload: true needs a command of the form '{python} -m regmix_plugin ...' with no shell "
                  "operators; set preload: auto or false")

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of study settings")
    try:
        return study_from_dict(data, path.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def study_from_dict(data: dict[str, Any], study_dir: Path) -> Study:
    allowed = ["name", "base_mixture", "proxy_config", "mixtures", "synthesize", "out", "command", "env",
               "runs", "backend", "local", "slurm", "repetition", "reuse"]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")
    for key in ("name", "base_mixture"):
        if key not in data:
            raise ConfigError(f"{key}: missing; a study needs name and base_mixture (the domains)")

    def rel(key: str) -> Path | None:
        v = data.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a path string, got {v!r}")
        return (study_dir / v).resolve()

    synth = data.get("synthesize")
    return Study(
        name=data["name"],
        base_mixture=rel("base_mixture"),
        out=rel("out") or (study_dir / str(data["name"])).resolve(),
        study_dir=study_dir,
        mixtures=rel("mixtures"),
        synthesize=SynthConfig.from_dict(synth) if synth is not None else None,
        proxy_config=rel("proxy_config"),
        command=data.get("command", DEFAULT_COMMAND),
        env=data.get("env") or {},
        runs=_from_mapping(RunPolicy, data.get("runs"), "runs"),
        backend=data.get("backend", "local"),
        local=_from_mapping(LocalConfig, data.get("local"), "local"),
        slurm=_from_mapping(SlurmConfig, data.get("slurm"), "slurm"),
        repetition=RepetitionConfig.from_dict(data.get("repetition")),
        reuse=rel("reuse"),
    )
