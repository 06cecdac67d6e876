"""Training one CPU proxy run for a benchmark, through `regmix train` as a user would, resumable.

Shared by the benchmarks that train curves (`scaling.py`, `nested.py`): a run whose outcome.json says
completed is kept, so an interrupted benchmark picks up where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "megatron_configs" / "proxy-tiny-cpu.yaml"


def train_proxy(mixture: Path, run_dir: Path, overrides: list[str]) -> None:
    """Train ``mixture`` into ``run_dir`` with the tiny CPU config and ``--set`` ``overrides``."""
    from regmix_plugin.cli import main

    done = run_dir / "outcome.json"
    if done.is_file() and json.loads(done.read_text()).get("status") == "completed":
        return
    args = ["train", "--mixture", str(mixture), "--config", str(CONFIG), "--run-dir", str(run_dir)]
    for s in overrides:
        args += ["--set", s]
    if main(args) != 0:
        raise SystemExit(f"training {run_dir} failed; see {run_dir}/outcome.json")
