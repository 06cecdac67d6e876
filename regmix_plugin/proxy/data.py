"""Which samples each rank reads at each step: a Megatron-style sequential batch plan, phase by phase.

Step ``s`` of a phase reads samples ``[s * G, (s + 1) * G)`` of that phase's blend (``G`` = global batch
size); rank ``r`` of ``W`` takes the contiguous slice ``[r * G/W, (r + 1) * G/W)`` of it, cut into micro
batches. The plan is a pure function of (phase-local step, rank), so resuming at step ``s`` reads exactly
what an uninterrupted run would have read, and a schedule's switch to a new phase starts that phase's blend
at its sample 0 (Megatron-LM's ``consumed_train_samples_in_current_phase``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from regmix_plugin.errors import ConfigError


@dataclass(frozen=True)
class BatchLayout:
    global_batch_size: int
    micro_batch_size: int
    world_size: int
    rank: int

    def __post_init__(self) -> None:
        if self.global_batch_size % (self.micro_batch_size * self.world_size):
            raise ConfigError(
                f"train.global_batch_size: {self.global_batch_size} is not a multiple of train.micro_batch_size "
                f"({self.micro_batch_size}) x data-parallel ranks ({self.world_size}); adjust either"
            )

    @property
    def per_rank(self) -> int:
        return self.global_batch_size // self.world_size

    @property
    def num_micro_batches(self) -> int:
        return self.per_rank // self.micro_batch_size

    def micro_batches(self, local_step: int) -> list[list[int]]:
        """Sample indices (into the phase's blend) of this rank's micro batches at a phase-local step."""
        base = local_step * self.global_batch_size + self.rank * self.per_rank
        m = self.micro_batch_size
        return [list(range(base + i * m, base + (i + 1) * m)) for i in range(self.num_micro_batches)]


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro batches for phase-local steps ``[first_step, end_step)``."""

    def __init__(self, layout: BatchLayout, first_step: int, end_step: int) -> None:
        self.layout, self.first_step, self.end_step = layout, first_step, end_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.first_step, self.end_step):
            yield from self.layout.micro_batches(step)

    def __len__(self) -> int:
        return (self.end_step - self.first_step) * self.layout.num_micro_batches


class ShardBatchSampler(Sampler[list[int]]):
    """Evaluation: rank ``r`` takes every ``W``-th sample, in batches; every sample is seen exactly once."""

    def __init__(self, num_samples: int, batch_size: int, world_size: int, rank: int) -> None:
        self.indices = list(range(rank, num_samples, world_size))
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i : i + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    batch = default_collate(items)
    return {k: torch.as_tensor(v) for k, v in batch.items()}


def make_loader(dataset: Dataset, batch_sampler: Sampler[list[int]], num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers)
