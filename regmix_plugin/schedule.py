"""Multi-phase data schedules: a list of mixtures, each with the iteration at which it begins.

Schedule file (YAML; mixture paths are relative to the schedule file's folder)::

    phases:
      - {start: 0,    mixture: phase1.json}
      - {start: 8000, mixture: phase2.json}

or, for a schedule not yet tied to a run length (a synthesized proxy schedule, an optimised one), each phase's
start as a fraction of training (``fraction: 0.8``: the phase begins after 80 % of the iterations)::

    phases:
      - {fraction: 0,   mixture: phase1.json}
      - {fraction: 0.8, mixture: phase2.json}

A run resolves fractions against its own length (:meth:`Schedule.resolve`): the proxy trainer against its
``train.steps``, a Megatron-LM launch against ``--train-samples / --global-batch-size``
(:meth:`Schedule.for_megatron`; ``--phase-transition-iterations`` needs iterations), and
`regmix export --format schedule --train-iters N` writes the resolved file.

Semantics (the same for the proxy trainer and for Megatron-LM): phase ``k`` trains on its own blend, built
for exactly ``(start[k+1] - start[k]) * global_batch_size`` samples, and reads it from its first sample.
Samples are counted per phase, so a switch neither repeats nor skips a sample of either blend.

Megatron-LM (>= core 0.16) implements this with ``--phase-transition-iterations start[1],start[2],...``: at
each transition iteration it saves a checkpoint and exits; relaunching with the next phase's blend (and
``--load``) builds that phase's dataset with ``train_samples_in_current_phase`` samples and starts its
loader at ``(iteration - last_transition) * global_batch_size``. :meth:`Schedule.megatron_args` gives the
flag, and ``python -m regmix_plugin.megatron.pretrain_gpt --data-schedule-from S.yaml`` picks the phase's
mixture from the loaded iteration, so the same command is simply relaunched. See docs/megatron.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from regmix_plugin.config_schema import BeforeChecked, Checked, Number, config, read_yaml_file, validate
from regmix_plugin.errors import ConfigError
from regmix_plugin.mixture import Mixture


def _path(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError("expected the path of a regmix.json file")
    return v


def _phase_keys(v: Any) -> Any:
    # Both keys, always: a phase without its start (or mixture) is a typo, not a default.
    if isinstance(v, Phase):
        return v
    if not isinstance(v, dict) or set(v) not in ({"start", "mixture"}, {"fraction", "mixture"}):
        raise ConfigError("expected exactly the keys start and mixture (or fraction and mixture)")
    return v


@config(frozen=True)
class Phase:
    # the first iteration (0-based optimizer step) that trains on this mixture; None when given as a fraction
    # (defaults only so that either key may be left out: _phase_keys demands exactly one of start/fraction)
    start: Number(integer=True, ge=0, says="{value} is not an iteration; give an integer >= 0") | None = None
    mixture: Checked(_path, str) = ""  # as written in the file; Schedule.from_dict resolves it
    # where the phase begins as a fraction of training, in [0, 1); None when given as an iteration
    fraction: Number(ge=0, lt=1, says="{value} is not a fraction of training; give a number in [0, 1)") | None = None

    @property
    def mixture_path(self) -> str:
        return self.mixture

    def load(self) -> Mixture:
        return Mixture.load(self.mixture_path)


@config(frozen=True)
class Schedule:
    phases: tuple[Annotated[Phase, BeforeChecked(_phase_keys)], ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ConfigError("phases: the list is empty; give at least one {start, mixture} entry")
        kinds = {p.start is None for p in self.phases}
        if len(kinds) > 1:
            raise ConfigError("phases: some phases give start (an iteration) and others fraction; use one kind")
        key = "fraction" if self.fractional else "start"
        at = [p.fraction if self.fractional else p.start for p in self.phases]
        if at[0] != 0:
            raise ConfigError(f"phases[0].{key}: {at[0]} must be 0; the first phase begins the run")
        for i in range(1, len(self.phases)):
            if at[i] <= at[i - 1]:
                raise ConfigError(
                    f"phases[{i}].{key}: {at[i]} is not after phases[{i - 1}].{key} "
                    f"{at[i - 1]}; list phases in increasing {key} order"
                )

    @property
    def fractional(self) -> bool:
        """Whether the phases begin at fractions of training (not yet resolved to iterations)."""
        return self.phases[0].start is None

    def fractions(self) -> list[float]:
        """Where each phase begins, as a fraction of training (``[0, 0.8]``); a fractional schedule only."""
        self._need_fractions("fractions")
        return [float(p.fraction) for p in self.phases]

    def lengths(self) -> list[float]:
        """The share of training each phase covers (``[0.8, 0.2]``); a fractional schedule only."""
        f = self.fractions() + [1.0]
        return [f[i + 1] - f[i] for i in range(len(self.phases))]

    def _need_fractions(self, what: str) -> None:
        if not self.fractional:
            raise ConfigError(f"phases: {what} needs phases given as fractions of training (fraction: 0.8)")

    def _need_iterations(self, what: str) -> None:
        if self.fractional:
            raise ConfigError(
                f"phases: {what} needs iterations, but the phases begin at fractions of training; resolve them for "
                "the run's length: `regmix export SCHEDULE --format schedule --train-iters N --out S.yaml`"
            )

    def resolve(self, train_iters: int) -> "Schedule":
        """The same schedule with each phase's start in iterations of a run of ``train_iters`` iterations:
        ``round(fraction * train_iters)``. An iteration schedule is returned as it is."""
        if not self.fractional:
            return self
        starts = [round(p.fraction * train_iters) for p in self.phases]
        for i in range(1, len(starts)):
            if starts[i] <= starts[i - 1] or starts[i] >= train_iters:
                raise ConfigError(
                    f"phases[{i}].fraction: {self.phases[i].fraction} of {train_iters} iterations gives iteration "
                    f"{starts[i]}, which leaves phase {i - 1 if starts[i] <= starts[i - 1] else i} no iteration; "
                    "train longer or move the boundary"
                )
        return Schedule(tuple(Phase(s, p.mixture) for s, p in zip(starts, self.phases)))

    def for_megatron(self, train_samples: int | None, global_batch_size: int | None) -> "Schedule":
        """The schedule in iterations of a Megatron-LM run of ``train_samples`` samples at ``global_batch_size``
        (a schedule run trains in samples, DECISIONS 72); an iteration schedule is returned as it is."""
        if not self.fractional:
            return self
        if not train_samples or not global_batch_size:
            self._need_iterations("a Megatron-LM run without --train-samples and --global-batch-size")
        return self.resolve(int(train_samples) // int(global_batch_size))

    def to_dict(self, relative_to: str | os.PathLike | None = None) -> dict:
        """The schedule file's content; mixture paths relative to ``relative_to`` when given."""
        def path(p: str) -> str:
            return os.path.relpath(p, relative_to) if relative_to is not None else p

        key = "fraction" if self.fractional else "start"
        return {"phases": [{key: (p.fraction if self.fractional else p.start), "mixture": path(p.mixture)}
                           for p in self.phases]}

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | os.PathLike = ".") -> "Schedule":
        if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
            raise ConfigError("phases: missing; a schedule is {phases: [{start: 0, mixture: a.json}, ...]}")
        written = validate(cls, data)
        return cls(tuple(Phase(p.start, os.path.normpath(os.path.join(base_dir, p.mixture)), p.fraction)
                         for p in written.phases))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Schedule":
        path = Path(path)
        data = read_yaml_file(path, f"--schedule {path}")
        try:
            return cls.from_dict(data, base_dir=path.resolve().parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def single(cls, mixture_path: str | os.PathLike) -> "Schedule":
        return cls((Phase(0, str(mixture_path)),))

    def phase_index(self, iteration: int) -> int:
        """The phase that trains iteration ``iteration``."""
        self._need_iterations("phase_index")
        return max(i for i, p in enumerate(self.phases) if p.start <= iteration)

    def domain_order(self, mixtures: list[Mixture] | None = None) -> list[str]:
        """The domains every phase is evaluated on, in the first phase's order.

        Per-domain losses must mean the same thing in every phase, so every phase lists the same domains (one a
        phase does not train on has weight 0 there) with the same validation data; the order may differ.
        ``mixtures``: the phases' mixtures when the caller has loaded them already (read each file once).
        """
        mixtures = [p.load() for p in self.phases] if mixtures is None else mixtures
        first = mixtures[0]
        for i, (phase, mix) in enumerate(zip(self.phases[1:], mixtures[1:]), start=1):
            if set(mix.names) != set(first.names):
                extra = sorted(set(mix.names) - set(first.names))
                missing = sorted(set(first.names) - set(mix.names))
                raise ConfigError(
                    f"phases[{i}].mixture: {phase.mixture_path} lists domains {'+' + ','.join(extra) if extra else ''}"
                    f"{' ' if extra and missing else ''}{'-' + ','.join(missing) if missing else ''} against "
                    "phases[0]; every phase must list the same domains (give a domain a phase does not train on weight 0)"
                )
            for name in first.names:
                a, b = _valid_data(first, name), _valid_data(mix, name)
                if a != b:
                    raise ConfigError(
                        f"phases[{i}].mixture: domain {name!r} is validated on {', '.join(b)} but in phases[0] on "
                        f"{', '.join(a)}; every phase must validate a domain on the same data"
                    )
        for i, mix in enumerate(mixtures):
            raw = mix.normalization.get("raw_sum")
            if raw is not None and abs(float(raw) - 1.0) > 1e-6:
                raise ConfigError(
                    f"phases[{i}].mixture: {self.phases[i].mixture_path} has weights summing to {float(raw):.6g}, not 1; "
                    "a schedule's phases are mixtures: give weights that sum to 1"
                )
        return first.names

    def transition_iterations(self) -> list[int]:
        self._need_iterations("transition_iterations")
        return [p.start for p in self.phases[1:]]

    def phase_bounds(self, train_iters: int) -> list[tuple[int, int]]:
        """``[start, end)`` iterations of each phase in a run of ``train_iters`` iterations."""
        self._need_iterations("phase_bounds")
        if self.phases[-1].start >= train_iters:
            raise ConfigError(
                f"phases[{len(self.phases) - 1}].start: {self.phases[-1].start} is not before the end of training "
                f"({train_iters} iterations); lengthen training or drop the phase"
            )
        ends = [p.start for p in self.phases[1:]] + [train_iters]
        return [(p.start, e) for p, e in zip(self.phases, ends)]

    def megatron_args(self) -> list[str]:
        """The Megatron-LM flag that makes training stop (and checkpoint) at each transition."""
        its = self.transition_iterations()
        return ["--phase-transition-iterations", ",".join(map(str, its))] if its else []


def _valid_data(mix: Mixture, name: str) -> list[str]:
    """The prefixes a domain's validation loss is computed on (its training prefixes when it has no held-out set)."""
    d = next(x for x in mix.domains if x.name == name)
    return [mix.resolve(p) for p in (d.valid_prefixes or d.prefixes)]
