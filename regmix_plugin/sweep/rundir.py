"""The minimal run directory, checked by `regmix validate RUN_DIR` with the same readers that `regmix collect`
and `regmix scale fit` use (so the three agree on what they accept):

- the run's weights: ``mixture.json``, a full mixture or a weights record (names and weights, no prefixes;
  `regmix_plugin.mixture.weights_record`), or for a ``regmix train`` run the mixture its ``config.yaml`` names;
- its evaluations: ``metrics.jsonl`` eval lines with ``valid/<set>/<metric>`` keys, or TensorBoard event files
  (in the directory, ``tb/`` or ``tensorboard/``; Megatron-LM's ``lm loss validation-<set>`` tags are read
  as ``valid/<set>/loss``);
- optionally ``status.json`` (a sweep's) or ``outcome.json`` (the trainer's). A directory with neither and
  no ``config.yaml`` holds curves made elsewhere: status ``imported``.
"""

from __future__ import annotations

from pathlib import Path

from regmix_plugin.errors import RegmixError
from regmix_plugin.sweep.state import METRICS, MIXTURE, PENDING, RUNNING


def check_run_dir(path: str | Path) -> str:
    """One line saying what the directory holds; a one-line RegmixError naming the missing or bad part."""
    from regmix_plugin.sweep.curves import record_curve
    from regmix_plugin.mixture import load_weights_record
    from regmix_plugin.sweep.collect import read_run, weights_from_config
    from regmix_plugin.sweep.imported import tensorboard_dir

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
