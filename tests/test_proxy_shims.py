"""The megatron-core CPU workarounds: fail loudly if an upgrade changes what they patch."""

from __future__ import annotations

import inspect

import torch

from megatron.core import parallel_state
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.tensor_parallel import random as mcore_random
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.utils import GlobalMemoryBuffer
from regmix_plugin.proxy import distributed
from regmix_plugin.proxy.config import ModelConfig
from regmix_plugin.proxy.cpu_shims import CPUMemoryBuffer, causal_mask
from regmix_plugin.proxy.model import build_model


def test_patched_megatron_objects_still_look_as_the_shims_expect():
    # 1. The no-op tracker comes from initialize_rng_tracker(inference_rng_tracker=..., force_reset=...).
    params = inspect.signature(mcore_random.initialize_rng_tracker).parameters
    assert {"inference_rng_tracker", "force_reset"} <= set(params)
    assert hasattr(mcore_random, "_CUDA_RNG_STATE_TRACKER")
    # 2. The buffer we replace: same method signature, still allocating on the CUDA device (else drop the shim).
    sig = list(inspect.signature(GlobalMemoryBuffer.get_tensor).parameters)
    assert sig == ["self", "tensor_shape", "dtype", "name", "mem_alloc_context"]
    assert "torch.cuda.current_device()" in inspect.getsource(GlobalMemoryBuffer.get_tensor)
    assert hasattr(parallel_state, "_GLOBAL_MEMORY_BUFFER")
    assert list(inspect.signature(CPUMemoryBuffer.get_tensor).parameters) == sig
    # ...and dot-product attention (local spec) is what asks the buffer for its baddbmm input.
    assert "get_global_memory_buffer().get_tensor" in inspect.getsource(DotProductAttention.forward)
    # 4. RoPE moves its frequencies to the CUDA device inside get_emb (only that call is redirected).
    assert "torch.cuda.current_device()" in inspect.getsource(RotaryEmbedding.get_emb)
    # 3. Megatron's attention mask convention: True = masked out.
    m = causal_mask(4)
    assert m.shape == (1, 1, 4, 4) and m[0, 0, 0, 1] and not m[0, 0, 1, 0] and not m[0, 0, 2, 2]


def test_gpt_model_trains_a_step_on_cpu_with_the_shims():
    original_current_device = torch.cuda.current_device
    env = distributed.setup("cpu")
    try:
        assert isinstance(parallel_state.get_global_memory_buffer(), CPUMemoryBuffer)
        # The installed tracker's fork() must be a no-op context (no CUDA RNG involved).
        with mcore_random.get_cuda_rng_tracker().fork():
            pass
        torch.manual_seed(0)
        for rope in (False, True):  # RegMix's proxies use RoPE, RMSNorm and SwiGLU
            cfg = ModelConfig(num_layers=1, hidden_size=16, ffn_hidden_size=32, num_attention_heads=2, seq_length=8,
                              position_embedding_type="rope" if rope else "learned_absolute",
                              normalization="RMSNorm" if rope else "LayerNorm", swiglu=rope)
            model = build_model(cfg, vocab_size=50, device=env.device)
            tokens = torch.randint(0, 50, (2, 8))
            pos = torch.arange(8).expand(2, 8)
            loss = model(tokens, pos, causal_mask(8), labels=tokens)  # [b, s]
            assert loss.shape == (2, 8) and torch.isfinite(loss).all()
            loss.mean().backward()
            assert all(p.grad is not None for p in model.parameters())
        assert torch.cuda.current_device is original_current_device  # the RoPE redirect is scoped
    finally:
        distributed.teardown()


def test_sdpa_attention_matches_megatron_attention():
    """model.attention=sdpa computes what megatron-core's DotProductAttention (with the causal mask) computes."""
    env = distributed.setup("cpu")
    try:
        losses = {}
        for attention in ("megatron", "sdpa"):
            torch.manual_seed(0)
            cfg = ModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, seq_length=16,
                              position_embedding_type="rope", attention=attention)
            model = build_model(cfg, vocab_size=50, device=env.device)
            tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
            losses[attention] = model(tokens, torch.arange(16).expand(3, 16), causal_mask(16), labels=tokens)
        torch.testing.assert_close(losses["sdpa"], losses["megatron"], rtol=1e-5, atol=1e-5)
    finally:
        distributed.teardown()
