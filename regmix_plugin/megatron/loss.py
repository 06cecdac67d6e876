"""forward_step and loss function for Megatron-LM that keep ``dataset_id`` and count losses per domain.

The loss report Megatron reduces stays its stock ``{"lm loss": [sum, count]}``. Beside it, the loss function
adds each micro batch's token losses and loss-token counts per domain into a :class:`DomainTally` on the
device (evaluation), and counts the samples drawn per domain (training). After an evaluation the hook
(``regmix_plugin.megatron.hooks``) sums the tally over the data-parallel (and context-parallel) group in one
collective and divides: the exact token-weighted mean per domain under any TP/PP/DP layout. One collective
per evaluation, whatever the number of domains: Megatron's loss report would all-reduce every key at every
evaluation iteration.
"""

from __future__ import annotations

from functools import partial

import torch

# Megatron-LM's batch keys (the same list as its dummy_train_step); dataset_id travels beside them.
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask", "cu_seqlens",
              "cu_seqlens_padded", "max_seqlen", "local_cp_size", "hybrid_cp_group")


class DomainTally:
    """Per-domain sums kept on the device: evaluation loss sums and token counts, training samples drawn."""

    def __init__(self, domain_names: list[str]) -> None:
        self.names = list(domain_names)
        self.loss = None  # [D] sum of token losses in the current evaluation
        self.tokens = None  # [D] loss tokens in the current evaluation
        self.samples = None  # [D] training samples drawn since this process started

    def _ensure(self, device: torch.device) -> None:
        if self.loss is None:
            n = len(self.names)
            self.loss = torch.zeros(n, dtype=torch.float64, device=device)
            self.tokens = torch.zeros(n, dtype=torch.float64, device=device)
            self.samples = torch.zeros(n, dtype=torch.float64, device=device)

    def begin_evaluation(self) -> None:
        if self.loss is not None:
            self.loss.zero_()
            self.tokens.zero_()

    def add_evaluation(self, ids: torch.Tensor, seq_loss: torch.Tensor, seq_tokens: torch.Tensor) -> None:
        self._ensure(seq_loss.device)
        ids = ids.reshape(-1).to(device=seq_loss.device, dtype=torch.long)
        self.loss.index_add_(0, ids, seq_loss.detach().to(torch.float64))
        self.tokens.index_add_(0, ids, seq_tokens.detach().to(torch.float64))

    def add_training(self, ids: torch.Tensor, device: torch.device) -> None:
        self._ensure(device)
        ids = ids.reshape(-1).to(device=device, dtype=torch.long)
        self.samples.index_add_(0, ids, torch.ones(ids.numel(), dtype=torch.float64, device=device))


def per_domain_loss(
    loss_mask: torch.Tensor,
    dataset_id: torch.Tensor,
    output_tensor: torch.Tensor,
    tally: DomainTally | None,
    evaluating: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Megatron's ``(loss, num_tokens, report)``; adds to ``tally`` per domain when one is given.

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
    if tally is not None and dataset_id is not None:
        if evaluating:
            tally.add_evaluation(dataset_id, per_seq, tokens)
        else:
            tally.add_training(dataset_id, losses.device)
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


def loss_func(loss_mask, dataset_id, tally, output_tensor, model=None):
    evaluating = model is not None and not _unwrap(model).training
    loss, num_tokens, report = per_domain_loss(loss_mask, dataset_id, output_tensor, tally, evaluating)
    _check_finite(loss)
    return loss, num_tokens, report


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def _mtp_on_this_rank(args, vp_stage) -> bool:
    """Whether multi-token-prediction layers live on this pipeline stage (they need the input tokens)."""
    from megatron.core.transformer.multi_token_prediction import mtp_on_this_rank

    if not getattr(args, "mtp_num_layers", None):
        return False
    return mtp_on_this_rank(getattr(args, "pipeline_model_parallel_layout", None), args.mtp_num_layers,
                            ignore_virtual=False, vp_stage=vp_stage)


def get_batch(data_iterator, vp_stage=None, evaluating: bool = False):
    """Megatron's TP/CP batch distribution, plus ``dataset_id`` broadcast from TP rank 0 of the group.

    No host synchronisation: the micro-batch size is known from the arguments (Megatron's samplers always yield
    whole micro-batches: ``--micro-batch-size`` in training, ``--eval-micro-batch-size`` in evaluation), so the
    other TP ranks allocate ``dataset_id`` without being told its length. (Reading a length from the device with
    ``.item()`` stalled the host once per micro-batch until the GPU caught up, and cannot be captured in a CUDA
    graph.)
    """
    from megatron.core import parallel_state as mpu
    from megatron.core.utils import get_batch_on_this_cp_rank, get_batch_on_this_tp_rank
    from megatron.training import get_args
    from megatron.training.utils.common_utils import is_first_or_last_pipeline_stage

    args = get_args()
    mtp_here = _mtp_on_this_rank(args, vp_stage)
    if not is_first_or_last_pipeline_stage(vp_stage) and not mtp_here:
        return None, None
    tp_rank = mpu.get_tensor_model_parallel_rank()
    src, group = mpu.get_tensor_model_parallel_src_rank(), mpu.get_tensor_model_parallel_group()
    device = torch.cuda.current_device()
    micro_batch_size = args.eval_micro_batch_size if evaluating else args.micro_batch_size
    batch: dict = {}
    if tp_rank == 0:
        batch = dict(next(data_iterator))  # a copy: a CUDA graph's static input buffers must keep their keys
        ids = torch.as_tensor(batch.pop("dataset_id"))  # on the host, from the data loader
        if ids.numel() != micro_batch_size:
            raise RuntimeError(f"regmix: a micro-batch of {ids.numel()} samples where Megatron's sampler gives "
                               f"{micro_batch_size}; the mixture's loader must yield whole micro-batches")
        dataset_id = ids.to(device=device, dtype=torch.long, non_blocking=True)
        for key in BATCH_KEYS:
            batch[key] = batch[key].to(device=device, non_blocking=True) if batch.get(key) is not None else None
    else:
        dataset_id = torch.empty(micro_batch_size, dtype=torch.long, device=device)
    torch.distributed.broadcast(dataset_id, src, group=group)
    batch = get_batch_on_this_tp_rank(
        batch,
        # The plugin's GPT datasets never carry packed-sequence metadata (--sft and inter-document masking
        # are refused at launch), so no cu_seqlens travel.
        has_cu_seqlens=False,
        is_hybrid_cp=False,  # refused at launch (check_regmix_args)
        create_attention_mask_in_dataloader=args.create_attention_mask_in_dataloader,
        broadcast_src_rank=src,
        broadcast_group=group,
        cp_size=args.context_parallel_size,
        tp_rank=tp_rank,
        micro_batch_size=micro_batch_size,
        seq_length=args.seq_length,
        mtp_on_this_rank=mtp_here,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        is_pipeline_first_stage=mpu.is_pipeline_first_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage),
        is_pipeline_last_stage=mpu.is_pipeline_last_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage),
    )
    batch = get_batch_on_this_cp_rank(
        batch,
        is_hybrid_cp=False,
        cp_group=mpu.get_context_parallel_group(),
        hybrid_cp_group_func=mpu.get_hybrid_data_context_parallel_groups,
    )
    return batch, dataset_id


def make_forward_step(tally: DomainTally | None):
    """A Megatron ``forward_step(data_iterator, model, return_schedule_plan=False)`` that fills ``tally``."""

    def forward_step(data_iterator, model, return_schedule_plan: bool = False):
        from megatron.core.utils import get_attr_wrapped_model
        from megatron.training import get_timers

        timers = get_timers()
        timers("batch-generator", log_level=2).start()
        evaluating = not _unwrap(model).training
        batch, dataset_id = get_batch(data_iterator, get_attr_wrapped_model(model, "vp_stage"), evaluating)
        timers("batch-generator").stop()
        batch = batch or {}
        inputs = (batch.get("tokens"), batch.get("position_ids"), batch.get("attention_mask"))
        loss = partial(loss_func, batch.get("loss_mask"), dataset_id, tally, model=model)
        if return_schedule_plan:
            # The combined 1F1B schedule (--overlap-moe-expert-parallel-comm) asks for the model's schedule plan
            # instead of its output, as in Megatron-LM's pretrain_gpt.py.
            plan = model.build_schedule_plan(*inputs, labels=batch.get("labels"), loss_mask=batch.get("loss_mask"))
            return plan, loss
        return model(*inputs, labels=batch.get("labels"), loss_mask=batch.get("loss_mask")), loss

    return forward_step
