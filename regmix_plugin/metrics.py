"""Per-domain metrics sink: ``metrics.jsonl`` (what the sweep collector reads), TensorBoard, and W&B.

Each :meth:`MetricsSink.log` call writes one JSON line with flat keys::

    {"step": 20, "tokens": 40960, "time": 1732330000.5, "mixture_hash": "3f2a...", "mixture_name": "n0007",
     "train/loss": 4.21, "lr": 0.00093}
    {"step": 20, "tokens": 40960, ..., "valid/web/loss": 4.35, "valid/code/loss": 3.90, "valid/loss": 4.12}

Metric keys are named like the runs-table columns (``train/loss``, ``lr``, ``valid/<domain>/loss``), and the
same keys are TensorBoard scalar tags. The format is documented in docs/metrics.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from regmix_plugin.io import append_jsonl, atomic_write_text

METRICS_FILE = "metrics.jsonl"
RESERVED_KEYS = ("step", "tokens", "time", "mixture_hash", "mixture_name")


class MetricsSink:
    """Writes metrics of one run. Only the process that owns the run directory (rank 0) creates one."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        mixture_hash: str,
        mixture_name: str,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "regmix",
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.mixture_hash = mixture_hash
        self.mixture_name = mixture_name
        if resume_step is not None:
            # Lines past the checkpoint were written by the interrupted run and will be written again.
            truncate_after(self.path, resume_step)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides TensorBoard events past the checkpoint for the same reason.
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)
        self._wandb = None
        if wandb:
            self._wandb = _start_wandb(self.run_dir, wandb_project, config, resume=resume_step is not None)

    def set_mixture(self, mixture_hash: str, mixture_name: str) -> None:
        """A multi-phase schedule changes the mixture mid-run; later lines carry the new one."""
        self.mixture_hash, self.mixture_name = mixture_hash, mixture_name

    def log(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        clash = [k for k in metrics if k in RESERVED_KEYS]
        if clash:
            raise ValueError(f"metric key {clash[0]!r} is reserved for the record itself")
        record: dict[str, Any] = {
            "step": int(step),
            "tokens": int(tokens),
            "time": time.time(),
            "mixture_hash": self.mixture_hash,
            "mixture_name": self.mixture_name,
        }
        record.update({k: float(v) for k, v in metrics.items()})
        append_jsonl(self.path, record)
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), global_step=int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics, tokens=int(tokens)), step=int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(run_dir: Path, project: str, config: dict[str, Any] | None, resume: bool):
    try:
        import wandb
    except ImportError:
        from regmix_plugin.errors import ConfigError

        raise ConfigError("metrics.wandb: true but wandb is not installed; pip install 'regmix_plugin[wandb]' or set it to false") from None
    return wandb.init(
        project=project,
        dir=str(run_dir),
        name=run_dir.name,
        # Stable across processes (unlike hash()), so a resumed run continues the same W&B run.
        id=f"{run_dir.name}-{hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]}",
        config=config or {},
        resume="allow" if resume else None,
    )


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a metrics.jsonl; a torn last line (a crash mid-write) is skipped."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_values(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of every key (later lines win): one runs-table row's metrics."""
    row: dict[str, Any] = {}
    for rec in records:
        row.update(rec)
    return row


def truncate_after(path: str | os.PathLike, step: int) -> None:
    """Drop the records with ``step`` greater than the given one (atomically)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))
