"""Build the proxy's megatron-core GPTModel (local layer spec) from a :class:`ModelConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig

from regmix_plugin.proxy.attention import SDPADotProductAttention
from regmix_plugin.proxy.config import ModelConfig
from regmix_plugin.proxy.cpu_shims import patch_model_for_cpu


def transformer_config(cfg: ModelConfig, on_cpu: bool) -> TransformerConfig:
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        normalization=cfg.normalization,
        gated_linear_unit=cfg.swiglu,
        activation_func=F.silu if cfg.swiglu else F.gelu,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        init_method_std=cfg.init_method_std,
        # Initialise on CPU everywhere: the weights then depend on the seed only, not on the device.
        use_cpu_initialization=True,
        # The fused bias-GeLU / bias-dropout kernels are CUDA-only.
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=not on_cpu,
        persist_layer_norm=False,
    )


def build_model(cfg: ModelConfig, vocab_size: int, device: torch.device) -> GPTModel:
    """A GPTModel on ``device``; call after ``initialize_model_parallel`` (and the CPU shims on CPU)."""
    spec = get_gpt_layer_local_spec(normalization=cfg.normalization)
    if cfg.attention == "sdpa":
        spec.submodules.self_attention.submodules.core_attention = SDPADotProductAttention
    model = GPTModel(
        config=transformer_config(cfg, on_cpu=device.type == "cpu"),
        transformer_layer_spec=spec,
        vocab_size=vocab_size,
        max_sequence_length=cfg.seq_length,
        position_embedding_type=cfg.position_embedding_type,
        share_embeddings_and_output_weights=not cfg.untie_embeddings,
    )
    if device.type == "cpu":
        patch_model_for_cpu(model)
    return model.to(device)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts (the scaling laws use the latter)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embedding" in n or "output_layer" in n)
    return {"parameters": total, "non_embedding_parameters": total - embedding}
