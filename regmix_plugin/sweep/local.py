"""The local backend: up to ``local.max_concurrent`` runners at once on this machine, with a progress bar.

Each run gets its own runner process (:mod:`regmix_plugin.sweep.runner`), which holds the run's lock for as
long as the command runs. Runners are started with ``--wait``: if a runner from an earlier, killed sweep
still holds a run, the new one waits for it and then finds the run finished, instead of starting it twice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import deque

from tqdm import tqdm

from regmix_plugin.sweep.state import COMPLETED, FAILED

_POLL_S = 0.2


def run_local(prep, progress: bool = True) -> None:
    states = prep.states()
    todo = deque(r for r in prep.run_ids if states[r] not in (COMPLETED, FAILED))
    done = len(prep.run_ids) - len(todo)
    limit = prep.study.local.max_concurrent
    active: dict[str, subprocess.Popen] = {}
    bar = tqdm(total=len(prep.run_ids), initial=done, unit="run", desc=prep.study.name, disable=not progress,
               file=sys.stderr)
    counts = {COMPLETED: 0, FAILED: 0}
    try:
        while todo or active:
            while todo and len(active) < limit:
                run_id = todo.popleft()
                active[run_id] = subprocess.Popen(
                    [sys.executable, "-m", "regmix_plugin.sweep.runner", str(prep.spec_path), run_id, "--wait"],
                    stdin=subprocess.DEVNULL,
                )
            time.sleep(_POLL_S)
            for run_id, proc in list(active.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del active[run_id]
                counts[COMPLETED if rc == 0 else FAILED] += 1
                bar.update(1)
                bar.set_postfix(ok=counts[COMPLETED], failed=counts[FAILED])
    finally:
        bar.close()
