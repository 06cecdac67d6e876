"""One run directory, read into a :class:`~regmix_plugin.collect.record.RunRecord`, and the minimal run
directory, checked by `regmix validate RUN_DIR` with the same readers that `regmix collect` and
`regmix scale fit` use (so the three agree on what they accept):

- the run's weights: ``mixture.json``, a full mixture or a weights record (names and weights, no prefixes;
  `regmix_plugin.mixture.weights_record`), or for a ``regmix train`` run the mixture its ``config.yaml`` names;
- its evaluations: ``metrics.jsonl`` eval lines with ``valid/<set>/<metric>`` keys, or TensorBoard event files
  (in the directory, ``tb/`` or ``tensorboard/``; Megatron-LM's ``lm loss validation-<set>`` tags are read
  as ``valid/<set>/loss``);
- optionally ``status.json`` (a sweep's) or ``outcome.json`` (the trainer's). A directory with neither and
  no ``config.yaml`` holds curves made elsewhere: status ``imported``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from regmix_plugin.collect.imported import fill_record, read_tensorboard, tensorboard_dir
from regmix_plugin.collect.record import RunRecord, record_curve
from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Mixture, MixtureError, load_weights_record
from regmix_plugin.sweep.state import (
    COMPLETED, FAILED, METRICS, MIXTURE, OUTCOME, PENDING, RUNNING, SCHEDULE, STATUS, read_json,
)
from regmix_plugin.table import IMPORTED


_RUN_MARKERS = (MIXTURE, STATUS, METRICS, OUTCOME, SCHEDULE)
TRAINER_CONFIG = "config.yaml"  # written by `regmix train` when it starts


def find_run_dirs(paths: list[str | Path], warnings: list[str]) -> list[Path]:
    """Run directories among ``paths``: a run directory itself, a sweep ``out`` (its ``runs/``), or a folder of runs."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise RegmixError(f"RUN_DIR {p}: not a directory; give run directories or a sweep's out folder")
        if is_run_dir(p):
            found.append(p)
            continue
        root = p / "runs" if (p / "runs").is_dir() else p
        subs = sorted(d for d in root.iterdir() if d.is_dir() and is_run_dir(d))
        if not subs:
            warnings.append(f"{p}: no run directories found (none holds mixture.json, status.json, metrics.jsonl "
                            "or TensorBoard event files)")
        found.extend(subs)
    return found


def is_run_dir(d: Path) -> bool:
    """The minimal run directory: any of mixture.json, status.json, metrics.jsonl, outcome.json, or event files."""
    return any((d / m).exists() for m in _RUN_MARKERS) or tensorboard_dir(d) is not None


def read_run(run_dir: Path, warnings: list[str], mixtures: dict[str, dict[str, float]] | None = None) -> RunRecord:
    """A run directory's record. ``mixtures`` (run id -> weights, from a mixtures file) stands in for a missing
    mixture.json."""
    run_id = run_dir.name
    weights = None
    starts = None
    raw = read_json(run_dir / MIXTURE)
    if (run_dir / SCHEDULE).exists():
        weights, starts, raw = schedule_weights(run_dir / SCHEDULE, run_id, warnings)
    elif (run_dir / MIXTURE).exists():
        try:
            weights = load_weights_record(run_dir / MIXTURE)
        except MixtureError as e:
            warnings.append(f"{run_id}: {e}; its weights are left empty (check it with `regmix validate {run_dir}`)")
        if raw and raw.get("normalization", {}).get("raw_sum") is not None:
            # Mixture.load renormalised a file whose weights did not sum to 1; report the original sum.
            warnings.append(f"{run_id}: mixture.json weights were normalised from a sum of "
                            f"{raw['normalization']['raw_sum']:.6g}")
    elif mixtures is not None and run_id in mixtures:
        weights = dict(mixtures[run_id])
    else:
        # a plain `regmix train` run: the mixture its config names (each phase's, for a schedule)
        weights, starts = config_schedule_weights(run_dir) or (weights_from_config(run_dir), None)
        if weights is None:
            warnings.append(f"{run_id}: no mixture.json (and not in --mixtures or a config.yaml); its weights "
                            "are left empty")
    status = _status(run_dir)
    prov = (raw or {}).get("provenance")
    split = prov.get("split") if isinstance(prov, dict) else None
    rec = RunRecord(run_id, status, weights, split=split, path=run_dir, phase_starts=starts)
    path = run_dir / METRICS
    if not path.is_file():
        tb = tensorboard_dir(run_dir)
        if tb is not None:
            fill_record(rec, read_tensorboard(tb))
        elif status == COMPLETED:
            warnings.append(f"{run_id}: completed but has no metrics.jsonl")
        return rec
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
                step = int(r["step"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                bad += 1
                continue
            vals = {k: v for k, v in r.items() if k.startswith("valid/")}
            if vals:
                rec.evals.setdefault(step, {}).update(vals, tokens=r.get("tokens"))
            if "train/loss" in r:
                rec.train.append((step, r["train/loss"], r.get("tokens")))
    if bad:
        warnings.append(f"{run_id}: {bad} unreadable line(s) in metrics.jsonl skipped (a run cut mid-write?)")
    rec.train.sort(key=lambda t: t[0])
    return rec


def schedule_weights(path: Path, run_id: str, warnings: list[str]):
    """A schedule run's weights keyed ``p<k>/<domain>``, its phase starts (fractions) and its first phase's raw
    JSON (for the split in its provenance); ``(None, None, None)`` with a warning when it cannot be read."""
    from regmix_plugin.schedule import Schedule

    try:
        sched = Schedule.load(path)
        mixtures = [p.load() for p in sched.phases]
        sched.domain_order(mixtures)
        if not sched.fractional:
            raise RegmixError("phases: give them as fractions of training (fraction: 0.8) to collect them")
    except RegmixError as e:
        warnings.append(f"{run_id}: {e}; its weights are left empty")
        return None, None, None
    weights = {f"p{k}/{n}": w for k, m in enumerate(mixtures) for n, w in zip(m.names, m.weights)}
    return weights, sched.fractions(), read_json(Path(sched.phases[0].mixture_path))


def config_schedule_weights(run_dir: Path) -> tuple[dict[str, float], list[float]] | None:
    """A multi-phase `regmix train` run's weights keyed ``p<k>/<domain>`` and its phase starts as fractions of
    its ``train.steps``, from its ``config.yaml``; None for a single-mixture run or an unreadable config."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        phases, steps = cfg["run"]["schedule"], int(cfg["train"]["steps"])
        if len(phases) < 2:
            return None
        weights: dict[str, float] = {}
        for k, p in enumerate(phases):
            path = Path(p["mixture"])
            mix = Mixture.load(path if path.is_absolute() else run_dir / path)
            weights.update({f"p{k}/{n}": w for n, w in zip(mix.names, mix.weights)})
        return weights, [int(p["start"]) / steps for p in phases]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError, MixtureError):
        return None


def weights_from_config(run_dir: Path) -> dict[str, float] | None:
    """The weights of the mixture a ``regmix train`` run's ``config.yaml`` names (its first phase); None if none."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        first = Path(cfg["run"]["schedule"][0]["mixture"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
    try:
        mix = Mixture.load(first if first.is_absolute() else run_dir / first)
    except MixtureError:
        return None
    return dict(zip(mix.names, mix.weights))


def _status(run_dir: Path) -> str:
    st = read_json(run_dir / STATUS)
    if st and st.get("state") in (COMPLETED, FAILED, RUNNING, PENDING):
        return st["state"]
    if st:
        return PENDING  # interrupted: the next sweep restarts it
    out = read_json(run_dir / OUTCOME)
    if out and out.get("status") in (COMPLETED, FAILED):
        return out["status"]
    if (run_dir / TRAINER_CONFIG).exists():  # `regmix train` started it and has not finished
        return RUNNING if (run_dir / METRICS).exists() else PENDING
    # Curves that no sweep or trainer of ours manages were brought in: imported, not running.
    return IMPORTED if (run_dir / METRICS).exists() or tensorboard_dir(run_dir) is not None else PENDING


def check_run_dir(path: str | Path) -> str:
    """One line saying what the directory holds; a one-line RegmixError naming the missing or bad part."""
    run_dir = Path(path)
    if (run_dir / MIXTURE).exists():
        weights = load_weights_record(run_dir / MIXTURE)
        source = MIXTURE
    else:
        weights = weights_from_config(run_dir)
        source = "the mixture named by config.yaml"
        if weights is None:
            raise RegmixError(f"{run_dir / MIXTURE}: missing; write the run's weights as "
                              '{"domains": [{"name": "web", "weight": 0.6}, ...]} (prefixes are optional)')
    notes: list[str] = []
    rec = read_run(run_dir, notes)
    curve = record_curve(rec)
    trained = [d for d, w in weights.items() if w > 0]
    head = f"{run_dir}: ok, run directory (status {rec.status}): {len(trained)} training domains ({source})"
    if len(curve) == 0:
        if rec.status in (PENDING, RUNNING):
            return f"{head}; no evaluations yet (collect and scale skip it until it has some)"
        raise RegmixError(f"{run_dir}: no evaluations; write valid/<set>/<metric> keys to {METRICS} or TensorBoard "
                          "event files (Megatron-LM: lm loss validation-<set>) into the directory, tb/ or tensorboard/")
    where = METRICS if (run_dir / METRICS).is_file() else f"TensorBoard files in {tensorboard_dir(run_dir)}"
    metrics = [c for c in curve.columns if c not in ("step", "tokens")]
    steps = curve["step"]
    evaluated_only = [m for m in metrics if m.split("/")[1] not in trained]
    extra = f"; {len(evaluated_only)} on sets that are not training domains" if evaluated_only else ""
    tail = "".join(f"; note: {n}" for n in notes)
    return (f"{head}; {len(curve)} evals (steps {int(steps.min())}..{int(steps.max())}) of {len(metrics)} metrics "
            f"from {where}: {', '.join(metrics)}{extra}{tail}")
