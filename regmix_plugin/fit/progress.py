"""What a long fit shows while it runs: a progress bar naming the candidate and fold, and each CV row as it is ready.

``auto`` reports through a :class:`FitListener`; the library default is silent. ``regmix fit`` passes a
:class:`ConsoleListener`: a tqdm bar on stderr (only when stderr is a terminal, unless forced, so logs and
pipes get no carriage-return noise) and the CV table on stdout, one row per candidate as soon as it is
scored, so a long fit is never silent and its partial results are visible.
"""

from __future__ import annotations

import sys
from typing import TextIO


class FitListener:
    """Receives a fit's progress; every method is optional (this base class ignores everything)."""

    def runs(self, n_runs: int, folds: int, target: str, dropped: list[str], missing: str = "") -> None:
        """The fit will cross-validate on ``n_runs`` runs; ``dropped`` were left out (``missing``: which target
        columns they lacked, as ``targets.missing_report`` says)."""

    def direction(self, target) -> None:
        """The target's direction (``Target.describe()``) is decided."""

    def start(self, total: int) -> None:
        """``total`` model fits are planned (one per candidate's model and fold, shared ones counted once)."""

    def step(self, label: str, fold: int, k: int) -> None:
        """A fit of ``label`` on fold ``fold`` (0-based) of ``k`` begins."""

    def row(self, row: dict) -> None:
        """A candidate's CV row (``predictor``, ``spearman``, ...) is final."""

    def close(self) -> None:
        """Nothing more will come."""


class ConsoleListener(FitListener):
    """tqdm on ``err`` and the CV table on ``out``. ``bar``: True / False, or None = only on a terminal."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, bar: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.bar = bar
        self._tqdm = None
        self._header = False

    def runs(self, n_runs: int, folds: int, target: str, dropped: list[str], missing: str = "") -> None:
        if dropped:
            more = f" (+{len(dropped) - 10} more)" if len(dropped) > 10 else ""
            print(f"left out {len(dropped)} run(s) that failed or have no {target!r}: {', '.join(dropped[:10])}{more}"
                  + (f"; missing values: {missing}" if missing else ""), file=self.out)
        print(f"{folds}-fold cross-validation on {n_runs} runs, target {target}:", file=self.out, flush=True)

    def direction(self, target) -> None:
        print(f"direction: {target.describe()}", file=self.out, flush=True)

    def start(self, total: int) -> None:
        from tqdm import tqdm

        disable = (not self.err.isatty()) if self.bar is None else not self.bar
        self._started = False
        self._tqdm = tqdm(total=total, file=self.err, disable=disable, unit="fit", dynamic_ncols=True, leave=False)

    def step(self, label: str, fold: int, k: int) -> None:
        if self._tqdm is not None:
            if self._started:  # the previous fit is done
                self._tqdm.update(1)
            self._started = True
            self._tqdm.set_description_str(f"{label}: fold {fold + 1}/{k}")

    def row(self, row: dict) -> None:
        from regmix_plugin.fit.cv import format_table

        lines = format_table([row]).splitlines()
        text = "\n".join(lines if not self._header else lines[2:])
        self._header = True
        if self._tqdm is not None and not self._tqdm.disable:
            self._tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
