"""The three workarounds that let megatron-core's GPTModel (local layer spec) train on CPU.

megatron-core 0.19 assumes CUDA in three places that the local (non-Transformer-Engine) path reaches:

1. The RNG tracker forks CUDA RNG states around dropout; on CPU we install megatron-core's own
   "inference" tracker, whose ``fork()`` is a no-op, so dropout draws from the global torch RNG.
2. ``GlobalMemoryBuffer.get_tensor`` allocates its scratch buffer on ``torch.cuda.current_device()``;
   dot-product attention asks it for the ``baddbmm`` input. We swap in a buffer that allocates on CPU.
3. The fallback softmax builds its default causal mask on the GPU; we always pass an explicit
   causal mask (:func:`causal_mask`).

A fourth one is needed only with ``position_embedding_type: rope``: ``RotaryEmbedding.get_emb`` moves its
``inv_freq`` to ``torch.cuda.current_device()`` on first use; :func:`patch_model_for_cpu` makes that device
the CPU for that one call.

Nothing happens at import time: call :func:`apply_cpu_shims` after ``initialize_model_parallel``, and
:func:`patch_model_for_cpu` on each model built for the CPU.
``tests/test_proxy_shims.py`` checks that the patched objects still look the way these shims expect,
so a megatron-core upgrade that changes them fails loudly instead of silently training differently.
"""

from __future__ import annotations

import functools
import operator
import types

import torch
from megatron.core import parallel_state
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.tensor_parallel import random as mcore_random
from megatron.core.utils import GlobalMemoryBuffer


class CPUMemoryBuffer(GlobalMemoryBuffer):
    """megatron-core's scratch buffer with the allocation moved to host memory."""

    def get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):
        required = functools.reduce(operator.mul, tensor_shape, 1)
        buf = self.buffer.get((name, dtype))
        if buf is None or buf.numel() < required:
            buf = self.buffer[(name, dtype)] = torch.empty(required, dtype=dtype, requires_grad=False)
        return buf[0:required].view(*tensor_shape)


def apply_cpu_shims() -> None:
    """Install the no-op RNG tracker and the CPU memory buffer. Idempotent; needs model parallel state."""
    mcore_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("apply_cpu_shims: call parallel_state.initialize_model_parallel() first")
    if not isinstance(parallel_state._GLOBAL_MEMORY_BUFFER, CPUMemoryBuffer):
        parallel_state._GLOBAL_MEMORY_BUFFER = CPUMemoryBuffer()


def _get_emb_on_cpu(self, *args, **kwargs):
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        return RotaryEmbedding.get_emb(self, *args, **kwargs)
    finally:
        torch.cuda.current_device = original


def patch_model_for_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """Keep RoPE's frequencies on the CPU (see the module doc); a no-op for models without RoPE."""
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.get_emb = types.MethodType(_get_emb_on_cpu, module)
    return model


def causal_mask(seq_length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Megatron's boolean attention mask, True where attention is *blocked*: [1, 1, s, s]."""
    return torch.triu(torch.ones(1, 1, seq_length, seq_length, dtype=torch.bool, device=device), diagonal=1)
