"""The validation set Megatron-LM reads: every domain's validation samples exactly once per evaluation.

Megatron's evaluation reads ``eval_iters`` global batches through its stock sampler, continuing where the
previous evaluation stopped (``consumed_valid_samples``). :class:`FixedValidationSet` makes that read the same
tokens every time: it lays the domains' validation samples end to end, pads them with loss-free samples to a
whole number of evaluation batches (the *period*), and repeats that period without end. With ``eval_iters`` =
period / evaluation batch, every evaluation reads one whole period: each sample once, the last domain's tail
included, at any data-parallel size. Evaluations that start off a period boundary (a relaunch with another
batch size) still read each sample once, in a rotated order.

Padding samples are copies of the first sample with a zero loss mask, so they add nothing to any loss or token
count; at most one evaluation batch minus one sample of padding is read per evaluation.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

# How many periods the virtual length holds: far more evaluations than any run makes (Megatron's sampler
# only asserts that consumed_valid_samples stays below the length).
_PERIODS = 1 << 30


class FixedValidationSet(torch.utils.data.Dataset):
    """``parts`` (one dataset per domain, items carrying ``dataset_id``) read once per ``batch`` multiple."""

    def __init__(self, parts: list[torch.utils.data.Dataset], batch: int) -> None:
        from megatron.core.datasets.utils import Split

        if batch < 1:
            raise ValueError(f"batch: {batch} is not positive")
        self.parts = list(parts)
        self.ends = []
        total = 0
        for p in self.parts:
            total += len(p)
            self.ends.append(total)
        if total == 0:
            raise ValueError("parts: no validation samples")
        self.samples = total  # real samples per period
        self.period = math.ceil(total / batch) * batch
        self.batches = self.period // batch  # Megatron's eval_iters
        # Megatron's data loader uses the evaluation batch sizes for datasets whose split is the validation one.
        self.split = Split.valid
        self._padding: dict[str, Any] | None = None

    def __len__(self) -> int:
        return self.period * _PERIODS

    def __getitem__(self, idx: int) -> dict[str, Any]:
        j = int(idx) % self.period
        if j >= self.samples:
            return self.padding()
        k = bisect.bisect_right(self.ends, j)
        start = self.ends[k - 1] if k else 0
        return self.parts[k][j - start]

    def padding(self) -> dict[str, Any]:
        if self._padding is None:
            item = dict(self.parts[0][0] if len(self.parts[0]) else next(p[0] for p in self.parts if len(p)))
            item["loss_mask"] = torch.zeros_like(item["loss_mask"])
            self._padding = item
        return dict(self._padding)
