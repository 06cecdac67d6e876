"""Turn a Megatron-LM evaluation into per-domain validation losses and write them where users look.

Megatron offers no callback that receives evaluation results, so :func:`install_evaluation_hook` wraps
``megatron.training.training.evaluate_and_print_results`` (the one place where the plugin wraps a Megatron
function). Around each evaluation it clears the :class:`~regmix_plugin.megatron.loss.DomainTally`, lets
Megatron evaluate, sums the tally over the data-parallel group in one collective on the last pipeline stage,
and then, on the last rank (which Megatron also logs from):

* appends ``valid/<domain>/loss``, ``valid/loss`` and ``train/<domain>/samples`` to ``metrics.jsonl`` (and
  ``tb/``) in ``--regmix-metrics-dir`` (default ``--save``), at the iteration Megatron reports;
* writes the per-domain losses to Megatron's own TensorBoard writer under the tags Megatron uses for named
  validation sets (``lm loss validation-<domain>``, and ``... vs samples``);
* prints one line with the per-domain losses.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass

import torch

from regmix_plugin.megatron.datasets import MixtureSource
from regmix_plugin.megatron.loss import DomainTally
from regmix_plugin.metrics import MetricsSink


def metrics_dir(args) -> str | None:
    return args.regmix_metrics_dir or args.save


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's results, summed over data parallelism."""

    losses: dict[str, float]  # domain -> token-weighted mean loss
    loss: float  # over all validation tokens (Megatron's own lm loss)
    samples: dict[str, int]  # domain -> training samples drawn since this launch started


def reduce_tally(tally: DomainTally) -> Evaluation | None:
    """The tally summed over data parallelism, on the last pipeline stage (None elsewhere, or before any sample)."""
    from megatron.core import parallel_state as mpu

    if not mpu.is_pipeline_last_stage(ignore_virtual=True) or tally.loss is None:
        return None
    evaluation = torch.stack([tally.loss, tally.tokens])
    torch.distributed.all_reduce(evaluation, group=mpu.get_data_parallel_group(with_context_parallel=True))
    # Context-parallel ranks see the same samples, so training counts are summed over data parallelism only.
    samples = tally.samples.clone()
    torch.distributed.all_reduce(samples, group=mpu.get_data_parallel_group())
    loss, tokens = evaluation.cpu().tolist()
    return Evaluation(
        losses={n: (s / t if t > 0 else float("nan")) for n, s, t in zip(tally.names, loss, tokens)},
        loss=sum(loss) / sum(tokens) if sum(tokens) > 0 else float("nan"),
        samples={n: int(round(c)) for n, c in zip(tally.names, samples.cpu().tolist())},
    )


class _EvaluationLog:
    """The last rank's writers, opened at the first evaluation."""

    def __init__(self, args, source: MixtureSource) -> None:
        self.args, self.source = args, source
        self.sink: MetricsSink | None = None
        self.last_iteration: int | None = None

    def write(self, iteration: int, result: Evaluation, to_tensorboard: bool) -> None:
        from megatron.training import get_tensorboard_writer, print_rank_last

        args = self.args
        print_rank_last(" regmix per-domain validation loss at iteration {} | {}".format(
            iteration, " | ".join(f"{n}: {v:.9E}" for n, v in result.losses.items())))
        if iteration == self.last_iteration:
            # Megatron evaluates again after training when the last iteration was an evaluation point: the same
            # weights and tokens give the same numbers, which are already written.
            return
        self.last_iteration = iteration
        values = {f"valid/{n}/loss": v for n, v in result.losses.items()}
        values["valid/loss"] = result.loss
        values.update({f"train/{n}/samples": c for n, c in result.samples.items()})
        out = metrics_dir(args)
        if out is not None:
            # Resolved now, not at launch: under a schedule the phase follows the loaded checkpoint.
            mixture = self.source.mixture(args.iteration)
            if self.sink is None:
                os.makedirs(out, exist_ok=True)
                self.sink = MetricsSink(out, mixture.content_hash(), mixture.name, resume_step=args.iteration or 0)
            self.sink.set_mixture(mixture.content_hash(), mixture.name)
            self.sink.log(iteration, args.consumed_train_samples * args.seq_length, values)
        writer = get_tensorboard_writer() if to_tensorboard else None
        if writer:
            for n, v in result.losses.items():
                writer.add_scalar(f"lm loss validation-{n}", v, iteration)
                writer.add_scalar(f"lm loss validation-{n} vs samples", v, args.consumed_train_samples)


def install_evaluation_hook(tally: DomainTally, source: MixtureSource) -> None:
    """Wrap Megatron's ``evaluate_and_print_results`` once per process (see the module doc)."""
    from megatron.training import get_args
    from megatron.training import training as mtraining

    original = mtraining.evaluate_and_print_results
    if getattr(original, "_regmix_hooked", False):
        return
    args = get_args()
    log = _EvaluationLog(args, source)
    signature = inspect.signature(original)

    @functools.wraps(original)
    def evaluate_and_print_results(*a, **kw):
        bound = signature.bind(*a, **kw)
        bound.apply_defaults()
        tally.begin_evaluation()
        before = args.consumed_valid_samples
        result = original(*a, **kw)
        # An evaluation cut short by --exit-duration-in-mins read only part of the validation set: not logged.
        complete = args.consumed_valid_samples - before >= args.eval_iters * args.eval_global_batch_size
        reduced = reduce_tally(tally) if complete else None
        if reduced is not None and torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
            log.write(int(bound.arguments["iteration"]), reduced, to_tensorboard=bound.arguments["write_to_tensorboard"])
        return result

    evaluate_and_print_results._regmix_hooked = True
    mtraining.evaluate_and_print_results = evaluate_and_print_results
