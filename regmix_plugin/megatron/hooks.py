"""Write Megatron-LM's per-domain validation losses into the plugin's metrics sink (metrics.jsonl + tb/).

Megatron's ``evaluate`` returns the reduced loss dictionary; :func:`install_metrics_hook` wraps it so that
the last rank (which holds the pipeline's last stage and the reduced values) logs every ``valid/<domain>/loss``
with the current iteration and consumed tokens. It is the one place where the plugin wraps a Megatron
function: Megatron offers no callback that receives the evaluation results.
"""

from __future__ import annotations

import functools
import os

from regmix_plugin.megatron.datasets import mixture_for_iteration
from regmix_plugin.metrics import MetricsSink


def metrics_dir(args) -> str | None:
    return args.regmix_metrics_dir or args.save


def install_metrics_hook() -> None:
    import torch
    from megatron.training import get_args
    from megatron.training import training as mtraining

    args = get_args()
    out = metrics_dir(args)
    if out is None or getattr(mtraining.evaluate, "_regmix_hooked", False):
        return
    sink: dict[str, MetricsSink] = {}
    original = mtraining.evaluate

    @functools.wraps(original)
    def evaluate(*a, **kw):
        result = original(*a, **kw)
        total_loss_dict = result[0]
        is_last = torch.distributed.get_rank() == torch.distributed.get_world_size() - 1
        if is_last and total_loss_dict:
            values = {k: float(v) for k, v in total_loss_dict.items() if k.startswith("valid/")}
            if values:
                # Resolved now, not at launch: under a schedule the phase depends on the loaded checkpoint.
                mixture = mixture_for_iteration(args)
                if not sink:
                    os.makedirs(out, exist_ok=True)
                    sink["s"] = MetricsSink(out, mixture.content_hash(), mixture.name, resume_step=args.iteration or 0)
                sink["s"].set_mixture(mixture.content_hash(), mixture.name)
                step = getattr(args, "curr_iteration", args.iteration)
                sink["s"].log(step, args.consumed_train_samples * args.seq_length, values)
        return result

    evaluate._regmix_hooked = True
    mtraining.evaluate = evaluate
