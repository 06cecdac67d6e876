"""Export formats of a multi-phase schedule (`regmix export SCHEDULE.yaml --format F`):

- ``schedule``: the ``--data-schedule-from`` file of a run of ``--train-iters`` iterations: each phase's start in
  iterations (``round(fraction x train_iters)``), mixture paths absolute so the file works wherever it is written;
- ``megatron-phases``: the stock Megatron-LM flags of the run: ``--phase-transition-iterations`` with
  ``--train-samples`` and ``--global-batch-size`` (Megatron-LM counts a phase's samples as
  ``transition iteration x global batch size``, up to ``--train-samples``, and needs one fixed global batch size;
  ``megatron/training/training.py``), then each phase's ``--data-path`` for a launcher of stock ``pretrain_gpt.py``,
  which saves and exits at each transition and is relaunched with ``--load`` and the next phase's data;
- ``bridge-phases``: per phase, the Megatron-Bridge blend of that phase's mixture (``--format bridge``), headed by
  the iterations it covers (a relaunch with another blend whose loader starts at the checkpoint's consumed
  samples skips that many of the new blend's samples; the header says so; Bridge's resume was not checked).

A schedule format is a function ``(schedule, options) -> str`` registered in ``export.registry.SCHEDULE_FORMATS``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import yaml

from regmix_plugin.errors import ConfigError
from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register_schedule
from regmix_plugin.mixture import Mixture
from regmix_plugin.schedule import Schedule


@dataclass(frozen=True)
class ScheduleOptions:
    train_iters: int | None = None
    global_batch_size: int | None = None
    base_dir: str | None = None


def resolved(schedule: Schedule, opts: ScheduleOptions, fmt: str) -> tuple[Schedule, list[Mixture]]:
    """The schedule in iterations and its phases' mixtures, checked: every phase lists the same domains, every
    phase's weights sum to 1."""
    mixtures = [p.load() for p in schedule.phases]
    schedule.domain_order(mixtures)
    if schedule.fractional:
        if opts.train_iters is None:
            raise ConfigError(f"--train-iters: --format {fmt} of a schedule in fractions of training needs the "
                              "run's iterations; give --train-iters N")
        schedule = schedule.resolve(opts.train_iters)
    elif opts.train_iters is not None:
        schedule.phase_bounds(opts.train_iters)  # its last phase begins before the end
    return schedule, mixtures


def _iters(schedule: Schedule, opts: ScheduleOptions) -> list[str]:
    ends = [p.start for p in schedule.phases[1:]] + ([opts.train_iters] if opts.train_iters else [None])
    return [f"{p.start}-{e - 1}" if e is not None else f"{p.start}-" for p, e in zip(schedule.phases, ends)]


@register_schedule("schedule")
def schedule_file(schedule: Schedule, opts: ScheduleOptions) -> str:
    sched, _ = resolved(schedule, opts, "schedule")
    doc = {"phases": [{"start": p.start, "mixture": p.mixture_path} for p in sched.phases]}
    return yaml.safe_dump(doc, sort_keys=False)


@register_schedule("megatron-phases")
def megatron_phases(schedule: Schedule, opts: ScheduleOptions) -> str:
    if opts.train_iters is None or opts.global_batch_size is None:
        raise ConfigError("--train-iters/--global-batch-size: --format megatron-phases needs both (Megatron-LM "
                          "counts phase samples as iterations x global batch size)")
    sched, mixtures = resolved(schedule, opts, "megatron-phases")
    samples = opts.train_iters * opts.global_batch_size
    lines = [
        f"# {len(sched.phases)} phases over {opts.train_iters} iterations x global batch {opts.global_batch_size} "
        f"= {samples} samples; Megatron-LM saves and exits at each transition (relaunch with --load)",
        "# With this plugin: python -m regmix_plugin.megatron.pretrain_gpt --data-schedule-from S.yaml (S.yaml from "
        "--format schedule) picks each phase's data itself; add these flags:",
        " ".join(["--train-samples", str(samples), "--global-batch-size", str(opts.global_batch_size),
                  *sched.megatron_args()]),
    ]
    for k, (mix, span) in enumerate(zip(mixtures, _iters(sched, opts))):
        lines.append(f"# stock pretrain_gpt.py, phase {k} (iterations {span}): its data")
        lines.append(" ".join(["--data-path", *map(shlex.quote, data_path_args(mix, "train", opts.base_dir))]))
    return "\n".join(lines) + "\n"


@register_schedule("bridge-phases")
def bridge_phases(schedule: Schedule, opts: ScheduleOptions) -> str:
    from regmix_plugin.export.bridge import bridge

    sched, mixtures = resolved(schedule, opts, "bridge-phases")
    out = []
    for k, (mix, span) in enumerate(zip(mixtures, _iters(sched, opts))):
        out.append(f"# ===== phase {k}: iterations {span} "
                   f"(set train.train_iters to this phase's end and resume from the last phase's checkpoint)")
        if k:
            out.append("# Resumed with another blend, a loader that starts at the checkpoint's consumed samples (as "
                       "Megatron-LM's does without --phase-transition-iterations) skips that many of this blend's "
                       "samples; --format megatron-phases starts each phase at its first sample (Bridge's resume not "
                       "checked here)")
        out.append(bridge(mix, opts.base_dir))
    return "\n".join(out)
