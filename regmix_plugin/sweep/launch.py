"""``regmix sweep STUDY.yaml``: prepare the run directories, then hand the unfinished runs to a backend.

Layout under the study's ``out``::

    sweep.json              what every runner reads (command, config, retries, timeout, run list)
    mixtures/               synthesized mixtures (when the study gives synthesis settings)
    runs/<run_id>/          mixture.json, status.json, log.txt, lock, and the command's outputs
    slurm/<submission>/     generated sbatch script, run list and task logs (Slurm backend)

Rerunning the same study is safe: finished runs are skipped, runs whose runner died are restarted, and a run
held by a live runner is never started twice (see :mod:`regmix_plugin.sweep.state`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json
from regmix_plugin.mixture import Mixture
from regmix_plugin.sweep.backend import get_backend
from regmix_plugin.sweep.state import COMPLETED, FAILED, MIXTURE, PENDING, RUNNING, Status, run_state
from regmix_plugin.sweep.study import Study
from regmix_plugin.synthesize.sampler import MANIFEST, manifest_mixtures, write_synthesis

SPEC = "sweep.json"


@dataclass
class Prepared:
    study: Study
    spec_path: Path
    run_ids: list[str]

    def run_dir(self, run_id: str) -> Path:
        return self.study.runs_dir / run_id

    def states(self) -> dict[str, str]:
        pol = self.study.runs
        return {r: run_state(self.run_dir(r), pol.retries, pol.stale_lock_s) for r in self.run_ids}


def _mixture_files(study: Study, base: Mixture) -> list[tuple[str, Path]]:
    if study.mixtures is not None:
        if not study.mixtures.is_dir():
            raise RegmixError(f"mixtures: {study.mixtures} is not a folder; run `regmix synthesize` first or fix the path")
        found = manifest_mixtures(study.mixtures)
    else:
        folder = study.out / "mixtures"
        man = folder / MANIFEST
        if man.is_file():
            try:
                digest = json.loads(man.read_text(encoding="utf-8")).get("config_digest")
            except (ValueError, UnicodeDecodeError, AttributeError):
                digest = None  # unreadable: treated as other settings, and said so below
            if digest != study.synthesize.digest():
                raise RegmixError(
                    f"synthesize: {folder} was synthesized with other settings; restore them or use a new out folder"
                )
        else:
            write_synthesis(study.synthesize, base, folder)
        found = manifest_mixtures(folder)
    if not found:
        raise RegmixError(f"mixtures: no *.json mixture files in {study.mixtures}")
    ids = [r for r, _, _ in found]
    dup = sorted({r for r in ids if ids.count(r) > 1})
    if dup:
        raise RegmixError(f"mixtures: two files are named {dup[0]}.json; run ids (file stems) must be unique")
    return [(r, p) for r, p, _ in found]


def _check_schedule_study(study: Study, n_schedules: int, n_runs: int, reuse: bool, repetition: bool) -> None:
    import string

    if n_schedules != n_runs:
        raise RegmixError(f"mixtures: {n_schedules} of {n_runs} candidates are schedules; a study runs mixtures or "
                          "schedules, not both")
    used = {f for _, f, _, _ in string.Formatter().parse(study.command) if f is not None}
    if "schedule" not in used:
        raise RegmixError("command: the study's candidates are schedules; pass --schedule {schedule} (or "
                          "--data-schedule-from {schedule} for Megatron)")
    if reuse or repetition:
        raise RegmixError(f"{'reuse' if reuse else 'repetition'}: not supported for schedules yet; drop it from "
                          "the study")


def _place_schedule(study: Study, base: Mixture, run_id: str, path: Path) -> None:
    """Copy a candidate schedule into ``<run_dir>/schedule/`` (its YAML and one mixture per phase, rebased)."""
    import yaml

    from regmix_plugin.io import atomic_write_text
    from regmix_plugin.schedule import Schedule
    from regmix_plugin.sweep.state import SCHEDULE, SCHEDULE_DIR

    sched = Schedule.load(path)
    mixtures = [p.load() for p in sched.phases]
    sched.domain_order(mixtures)  # every phase lists the same domains, validated alike
    for k, mix in enumerate(mixtures):
        if mix.names != base.names:
            raise RegmixError(f"mixtures: {path} phase {k} has domains {', '.join(mix.names)} but base_mixture has "
                              f"{', '.join(base.names)}; make them match")
    folder = study.runs_dir / run_id / SCHEDULE_DIR
    placed = [m.rebased(folder) for m in mixtures]
    key = "fraction" if sched.fractional else "start"
    doc = {"phases": [{key: (p.fraction if sched.fractional else p.start), "mixture": f"phase{k}.json"}
                      for k, p in enumerate(sched.phases)]}
    target = study.runs_dir / run_id / SCHEDULE
    if target.is_file():
        old = [Mixture.load(folder / f"phase{k}.json").content_hash() if (folder / f"phase{k}.json").is_file() else None
               for k in range(len(placed))]
        if old != [m.content_hash() for m in placed] or yaml.safe_load(target.read_text(encoding="utf-8")) != doc:
            raise RegmixError(f"mixtures: {run_id} changed since its run directory was made ({target}); "
                              "use a new out folder for new schedules")
        return
    folder.mkdir(parents=True, exist_ok=True)
    for k, m in enumerate(placed):
        m.save(folder / f"phase{k}.json")
    atomic_write_text(target, yaml.safe_dump(doc, sort_keys=False))


def prepare(study: Study) -> Prepared:
    """Write ``sweep.json`` and one run directory (with its ``mixture.json``) per mixture; idempotent."""
    base = Mixture.load(study.base_mixture)
    if study.proxy_config is not None and not study.proxy_config.is_file():
        raise RegmixError(f"proxy_config: {study.proxy_config} not found; fix the path")
    runs = _mixture_files(study, base)
    reuse = _reuse_plan(study, base)
    repetition = _repetition_plan(study, reuse.full_base() if reuse else base)
    schedules = [p for _, p in runs if p.suffix in (".yaml", ".yml")]
    if schedules:
        _check_schedule_study(study, len(schedules), len(runs), reuse is not None, repetition is not None)
    for run_id, path in runs:
        if path.suffix in (".yaml", ".yml"):
            _place_schedule(study, base, run_id, path)
            continue
        mix = Mixture.load(path)
        if mix.names != base.names:
            missing = sorted(set(base.names) ^ set(mix.names))
            raise RegmixError(
                f"mixtures: {path.name} has domains {', '.join(mix.names)} but base_mixture has "
                f"{', '.join(base.names)} (differs in {', '.join(missing) or 'order'}); make them match"
            )
        if reuse is not None:  # the run trains on every real domain; the reduced weights stay on record
            reduced = dict(zip(mix.names, mix.weights))
            mix = reuse.expand(mix).with_provenance(**mix.provenance, reuse={"plan": str(study.reuse),
                                                                           "reduced_weights": reduced})
        if repetition is not None:
            mix = repetition.apply(mix)
        run_dir = study.runs_dir / run_id
        target = run_dir / MIXTURE
        placed = mix.rebased(run_dir)
        if target.is_file():
            if Mixture.load(target).content_hash() != placed.content_hash():
                raise RegmixError(
                    f"mixtures: {run_id} changed since its run directory was made ({target}); "
                    "use a new out folder for new mixtures"
                )
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        placed.save(target)
    spec = {
        "version": 1,
        "study": study.name,
        "study_dir": str(study.study_dir),
        "runs_dir": str(study.runs_dir),
        "command": study.command,
        "config": str(study.proxy_config) if study.proxy_config else None,
        "python": sys.executable,
        "env": study.env,
        "retries": study.runs.retries,
        "timeout_s": study.runs.timeout_s,
        "stale_lock_s": study.runs.stale_lock_s,
        "runs": [r for r, _ in runs],
        "repetition": repetition.to_dict() if repetition is not None else None,
        "reuse": str(study.reuse) if study.reuse else None,
    }
    spec_path = study.out / SPEC
    atomic_write_json(spec_path, spec)
    atomic_write_json(study.out / "study.json", _study_record(study))
    return Prepared(study, spec_path, [r for r, _ in runs])


def _reuse_plan(study: Study, base: Mixture):
    if study.reuse is None:
        return None
    from regmix_plugin.reuse_plan import load_plan

    plan = load_plan(study.reuse)
    if sorted(base.names) != sorted(plan.reduced_names):
        raise RegmixError(f"base_mixture: {study.base_mixture} lists {', '.join(base.names)}, but the reuse plan "
                          f"searches {', '.join(plan.reduced_names)}; use the plan's base.json")
    return plan


def _repetition_plan(study: Study, base: Mixture):
    from regmix_plugin.synthesize.repetition import build_plan, resolve_budgets

    synth_target = study.synthesize.target_tokens if study.synthesize is not None else None
    budgets = resolve_budgets(study.repetition, synth_target, study.proxy_config, study.command)
    if budgets is None:
        return None
    plan = build_plan(base, *budgets, study.repetition.seed, study.out)
    for line in plan.describe():
        print(line)
    return plan


def _study_record(study: Study) -> dict[str, Any]:
    d = asdict(study)
    return json.loads(json.dumps(d, default=str))


def reset_failed(prep: Prepared) -> int:
    """Let runs that ran out of retries try again (``--retry-failed``); returns how many."""
    n = 0
    for r, state in prep.states().items():
        if state == FAILED:
            st = Status.load(prep.run_dir(r))
            st.reset_at = len(st.attempts)
            st.state = PENDING
            st.save(prep.run_dir(r))
            n += 1
    return n


def summarize(prep: Prepared) -> tuple[str, int]:
    """A one-paragraph summary and the exit code (0 when every run completed)."""
    states = prep.states()
    counts = {s: sum(1 for v in states.values() if v == s) for s in (COMPLETED, FAILED, RUNNING, PENDING)}
    lines = [f"sweep {prep.study.name}: {len(states)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)]
    for r, s in states.items():
        if s == FAILED:
            reason = Status.load(prep.run_dir(r)).attempts[-1].get("reason")
            lines.append(f"  {r} failed: {reason} (see {prep.run_dir(r) / 'log.txt'})")
    if counts[PENDING] or counts[RUNNING]:
        lines.append("  rerun the same `regmix sweep` command to finish the remaining runs")
    return "\n".join(lines), 0 if counts[COMPLETED] == len(states) else 1


def sweep(study: Study, retry_failed: bool = False, progress: bool = True) -> int:
    prep = prepare(study)
    if retry_failed:
        reset_failed(prep)
    get_backend(study.backend).run(prep, progress=progress)
    text, code = summarize(prep)
    print(text)
    return code
