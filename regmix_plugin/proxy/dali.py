"""Optional NVIDIA DALI loader backend (``data.loader: dali``, the ``[dali]`` extra).

The blended samples and their order come from the same dataset and batch sampler as the torch DataLoader;
DALI's ``external_source`` feeds each micro batch through a pipeline whose outputs arrive as torch tensors
(on the GPU when ``device_id`` is given, which lets DALI overlap the host-to-device copy with compute).
Token batches need no decoding or augmentation, so on CPU this only adds a copy; see docs/proxy.md for the
measured cost and when it is worth using.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from regmix_plugin.errors import ConfigError

KEYS = ("tokens", "labels", "loss_mask", "position_ids", "dataset_id")


class DaliLoader:
    def __init__(self, dataset: Dataset, batch_sampler: Sampler[list[int]], seq_length: int,
                 device_id: int | None = None, num_threads: int = 1) -> None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:
            raise ConfigError("data.loader: dali needs NVIDIA DALI; pip install 'regmix_plugin[dali]' or use torch") from None
        self.dataset, self.batch_sampler, self.seq_length = dataset, batch_sampler, seq_length
        self.device_id, self.num_threads = device_id, num_threads

    def _max_batch(self) -> int:
        return max((len(b) for b in self.batch_sampler), default=1)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from nvidia.dali import fn
        from nvidia.dali.pipeline import Pipeline
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        batches = iter(self.batch_sampler)

        def source():
            idx = next(batches)  # StopIteration ends the pipeline's epoch
            items = [self.dataset[i] for i in idx]
            return tuple([np.asarray(it[k]) for it in items] for k in KEYS)

        # exec_pipelined=False: DALI asks for the next batch only when one is consumed, so the sampler's
        # state (and hence what a crash or resume sees) is never ahead of training by a prefetch queue.
        pipe = Pipeline(batch_size=self._max_batch(), num_threads=self.num_threads, device_id=self.device_id,
                        exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        with pipe:
            outs = fn.external_source(source=source, num_outputs=len(KEYS), batch=True)
            pipe.set_outputs(*(o.gpu() if self.device_id is not None else o for o in outs))
        it = DALIGenericIterator([pipe], list(KEYS), last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False,
                                 prepare_first_batch=False)
        for out in it:
            yield out[0]
