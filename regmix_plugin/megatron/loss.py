"""forward_step and loss function for Megatron-LM that keep ``dataset_id`` and report per-domain losses.

Megatron's evaluation loop sums every ``[sum, count]`` entry of the loss report over micro batches, all-reduces
it over the data-parallel (and context-parallel) group, and divides at the end. Reporting each domain as
``valid/<domain>/loss: [sum of token losses, number of loss tokens]`` therefore yields the exact token-weighted
per-domain mean under any TP/PP/DP layout. Megatron takes the keys from the first micro batch and all-reduces
them in that order, so every micro batch reports every domain, with ``[0, 0]`` for absent ones.
"""

from __future__ import annotations

from functools import partial

import torch

# Megatron-LM's batch keys (the same list as its dummy_train_step); dataset_id travels beside them.
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask", "cu_seqlens",
              "cu_seqlens_padded", "max_seqlen", "local_cp_size", "hybrid_cp_group")


def per_domain_loss(
    loss_mask: torch.Tensor,
    dataset_id: torch.Tensor,
    output_tensor: torch.Tensor,
    domain_names: list[str] | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Megatron's ``(loss, num_tokens, report)``; per-domain ``[sum, count]`` entries when ``domain_names``.

    Shapes: ``loss_mask`` and ``output_tensor`` (per-token losses) [b, s]; ``dataset_id`` [b].
    """
    b = loss_mask.shape[0]
    losses = output_tensor.reshape(b, -1).float()
    mask = loss_mask.reshape(b, -1).float()
    per_seq = (losses * mask).sum(dim=1)  # [b]
    tokens = mask.sum(dim=1)  # [b]
    loss = per_seq.sum()
    num_tokens = tokens.sum().detach().to(torch.int)
    report = {"lm loss": torch.stack([loss.detach(), tokens.sum().detach()])}
    if domain_names:
        ids = dataset_id.reshape(-1).to(device=losses.device, dtype=torch.long)
        sums = torch.zeros(len(domain_names), device=losses.device).index_add_(0, ids, per_seq.detach())
        counts = torch.zeros(len(domain_names), device=losses.device).index_add_(0, ids, tokens.detach())
        for i, name in enumerate(domain_names):
            report[f"valid/{name}/loss"] = torch.stack([sums[i], counts[i]])
    return loss, num_tokens, report


def _check_finite(loss: torch.Tensor) -> None:
    """Megatron's NaN/Inf checks of the local loss, as in its pretrain_gpt.py."""
    from megatron.core.rerun_state_machine import get_rerun_state_machine
    from megatron.training import get_args

    if not get_args().check_for_nan_in_loss_and_grad:
        return
    machine = get_rerun_state_machine()
    for reject, what in ((torch.isnan, "NaN"), (torch.isinf, "Inf")):
        machine.validate_result(result=loss, rejection_func=reject, message=f"found {what} in local forward loss calculation",
                                tolerance=0.0, fatal=True)


def loss_func(loss_mask, dataset_id, domain_names, output_tensor, model=None):
    per_domain = domain_names if model is not None and not _unwrap(model).training else None
    loss, num_tokens, report = per_domain_loss(loss_mask, dataset_id, output_tensor, per_domain)
    _check_finite(loss)
    return loss, num_tokens, report


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def get_batch(data_iterator, vp_stage=None):
    """Megatron's TP/CP batch distribution, plus ``dataset_id`` broadcast from TP rank 0 of the group."""
    from megatron.core import parallel_state as mpu
    from megatron.core.utils import get_batch_on_this_cp_rank, get_batch_on_this_tp_rank
    from megatron.training import get_args
    from megatron.training.utils.common_utils import is_first_or_last_pipeline_stage

    if not is_first_or_last_pipeline_stage(vp_stage):
        return None, None
    args = get_args()
    tp_rank = mpu.get_tensor_model_parallel_rank()
    src, group = mpu.get_tensor_model_parallel_src_rank(), mpu.get_tensor_model_parallel_group()
    batch: dict = {}
    size = torch.zeros(1, dtype=torch.long, device="cuda")
    if tp_rank == 0:
        batch = dict(next(data_iterator))
        dataset_id = batch.pop("dataset_id").cuda(non_blocking=True).long()
        size[0] = dataset_id.numel()
        for key in BATCH_KEYS:
            batch[key] = batch[key].cuda(non_blocking=True) if batch.get(key) is not None else None
    torch.distributed.broadcast(size, src, group=group)
    if tp_rank != 0:
        dataset_id = torch.empty(int(size.item()), dtype=torch.long, device="cuda")
    torch.distributed.broadcast(dataset_id, src, group=group)
    has_cu_seqlens = getattr(args, "sft", False) or getattr(args, "dataloader_inter_document_masking", False)
    batch = get_batch_on_this_tp_rank(
        batch,
        has_cu_seqlens=has_cu_seqlens,
        is_hybrid_cp=args.hybrid_context_parallel,
        create_attention_mask_in_dataloader=args.create_attention_mask_in_dataloader,
        broadcast_src_rank=src,
        broadcast_group=group,
        cp_size=args.context_parallel_size,
        tp_rank=tp_rank,
        micro_batch_size=int(size.item()),
        seq_length=args.seq_length,
        mtp_on_this_rank=False,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        is_pipeline_first_stage=mpu.is_pipeline_first_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage),
        is_pipeline_last_stage=mpu.is_pipeline_last_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage),
    )
    batch = get_batch_on_this_cp_rank(
        batch,
        is_hybrid_cp=args.hybrid_context_parallel,
        cp_group=mpu.get_context_parallel_group(),
        hybrid_cp_group_func=mpu.get_hybrid_data_context_parallel_groups,
    )
    return batch, dataset_id


def make_forward_step(domain_names: list[str] | None):
    """A Megatron ``forward_step(data_iterator, model)`` reporting per-domain validation losses."""

    def forward_step(data_iterator, model, return_schedule_plan: bool = False):
        from megatron.core.utils import get_attr_wrapped_model
        from megatron.training import get_timers

        timers = get_timers()
        timers("batch-generator", log_level=2).start()
        batch, dataset_id = get_batch(data_iterator, get_attr_wrapped_model(model, "vp_stage"))
        timers("batch-generator").stop()
        batch = batch or {}
        output = model(batch.get("tokens"), batch.get("position_ids"), batch.get("attention_mask"),
                       labels=batch.get("labels"), loss_mask=batch.get("loss_mask"))
        return output, partial(loss_func, batch.get("loss_mask"), dataset_id, domain_names, model=model)

    return forward_step
