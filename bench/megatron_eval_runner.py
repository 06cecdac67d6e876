"""One Megatron-LM launch for bench/megatron_eval.py (run under torchrun; not a user entry point).

Applies the CPU patches of tests/megatron_cpu (this is a CPU benchmark of megatron.training), then times every
call of Megatron's ``evaluate_and_print_results`` (the whole evaluation: forward passes, reductions, the
plugin's per-domain collective and writes) and appends ``{"mode", "iteration", "seconds", "cpu_seconds"}``
lines (wall time, and this process's CPU time, which other processes' load disturbs far less) to
$REGMIX_BENCH_TIMES on rank 0. $REGMIX_BENCH_MODE chooses the validation path:

* ``paired``: ``pretrain_gpt`` with evaluations alternating between the plugin's per-domain path and a plain
  one (:func:`run_paired`);
* ``plain``: the same validation set and Megatron's plain lm loss only (``--no-regmix-per-domain-eval``);
* ``native``: megatron-core 0.19's own per-dataset validation: one validation dataset per domain with
  ``--multiple-validation-sets --full-validation --validation-set-names``;
* ``step`` (for bench/megatron_step.py): ``pretrain_gpt`` with training steps alternating between the plugin's
  forward step and the one in the file $REGMIX_BENCH_OLD_LOSS (an older loss.py), each ``train_step`` timed
  (:func:`run_step`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "megatron_cpu"))
import cpu_patches  # noqa: E402

cpu_patches.apply()

import megatron.training.training as mtraining  # noqa: E402
import torch  # noqa: E402

MODE = os.environ["REGMIX_BENCH_MODE"]
TIMES = os.environ["REGMIX_BENCH_TIMES"]


def time_evaluations() -> None:
    original = mtraining.evaluate_and_print_results

    @functools.wraps(original)
    def evaluate_and_print_results(prefix, forward_step_func, data_iterator, model, iteration, *a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        result = original(prefix, forward_step_func, data_iterator, model, iteration, *a, **kw)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if torch.distributed.get_rank() == 0:
            with open(TIMES, "a", encoding="utf-8") as f:
                f.write(json.dumps({"mode": MODE, "iteration": int(iteration), "seconds": seconds,
                                    "cpu_seconds": cpu}) + "\n")
        return result

    mtraining.evaluate_and_print_results = evaluate_and_print_results


class ValidSplit(torch.utils.data.Dataset):
    """A per-domain validation dataset marked as the validation split, as megatron-core's builder marks its own."""

    def __init__(self, base) -> None:
        from megatron.core.datasets.utils import Split

        self.base, self.split = base, Split.valid

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


def run_native() -> None:
    from megatron.core.enums import ModelType
    from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
    from megatron.training.arguments import parse_and_validate_args

    from regmix_plugin.megatron.args import add_regmix_args
    from regmix_plugin.megatron.datasets import build_for_args, builds_on_this_rank
    from regmix_plugin.megatron.launch import prepare_launch, use_prebuilt_dataset_helpers
    from regmix_plugin.megatron.loss import make_forward_step

    sys.argv = [sys.argv[0], *prepare_launch(sys.argv[1:]).argv]
    use_prebuilt_dataset_helpers()
    args = parse_and_validate_args(extra_args_provider=add_regmix_args)

    def provider(num_samples, vp_stage=None):
        here = builds_on_this_rank(vp_stage)
        ds = build_for_args(args, num_samples[0], build_on_this_rank=here)
        return ds.train, [ValidSplit(v) if here else None for v in ds.valid.values()], None

    provider.is_distributed = True
    time_evaluations()
    mtraining.pretrain(pretrain_cfg_container_from_args(args, gpt_config_from_args(args)), provider,
                       ModelType.encoder_or_decoder, make_forward_step(None))


def run_paired() -> None:
    """``pretrain_gpt`` with evaluations alternating between the plugin's per-domain path and a plain one.

    Even evaluations go through the plugin's hook with the per-domain tally; odd ones call Megatron's stock
    ``evaluate_and_print_results`` with the tally switched off: the same process, data and loader, so the two
    are timed side by side under the same load.
    """
    import regmix_plugin.megatron.hooks as hooks
    from regmix_plugin.megatron.loss import DomainTally
    from regmix_plugin.megatron.pretrain_gpt import main

    stock = mtraining.evaluate_and_print_results
    install = hooks.install_evaluation_hook

    def install_then_pair(tally, source):
        install(tally, source)
        hooked = mtraining.evaluate_and_print_results
        count = [0]

        @functools.wraps(stock)
        def evaluate_and_print_results(prefix, forward_step_func, data_iterator, model, iteration, *a, **kw):
            plain = count[0] % 2 == 1
            count[0] += 1
            add = DomainTally.add_evaluation
            if plain:
                DomainTally.add_evaluation = lambda self, *args: None
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                fn = stock if plain else hooked
                result = fn(prefix, forward_step_func, data_iterator, model, iteration, *a, **kw)
            finally:
                DomainTally.add_evaluation = add
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            if torch.distributed.get_rank() == 0:
                with open(TIMES, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"mode": "plain" if plain else "plugin", "iteration": int(iteration),
                                        "seconds": seconds, "cpu_seconds": cpu}) + "\n")
            return result

        mtraining.evaluate_and_print_results = evaluate_and_print_results

    hooks.install_evaluation_hook = install_then_pair
    main(sys.argv[1:])


def run_plain() -> None:
    from regmix_plugin.megatron.pretrain_gpt import main

    time_evaluations()
    main(sys.argv[1:])


def run_step() -> None:
    """Training steps alternate: even ones run the plugin's forward step, odd ones the old file's, same launch.

    Both fill their own per-domain tally; each step's wall and CPU time go to $REGMIX_BENCH_TIMES as
    ``{"mode": "current" | "old", ...}``.
    """
    import importlib.util

    from regmix_plugin.megatron.datasets import MixtureSource
    from regmix_plugin.megatron.pretrain_gpt import main

    spec = importlib.util.spec_from_file_location("regmix_old_loss", os.environ["REGMIX_BENCH_OLD_LOSS"])
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    stock = mtraining.train_step
    count = [0]
    old_step = []

    @functools.wraps(stock)
    def train_step(forward_step_func, *a, **kw):
        from megatron.training import get_args

        if not old_step:
            old_step.append(old.make_forward_step(old.DomainTally(MixtureSource.from_args(get_args()).names)))
        use_old = count[0] % 2 == 1
        count[0] += 1
        t0, c0 = time.perf_counter(), time.process_time()
        result = stock(old_step[0] if use_old else forward_step_func, *a, **kw)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if torch.distributed.get_rank() == 0:
            with open(TIMES, "a", encoding="utf-8") as f:
                f.write(json.dumps({"mode": "old" if use_old else "current", "iteration": count[0],
                                    "seconds": seconds, "cpu_seconds": cpu}) + "\n")
        return result

    mtraining.train_step = train_step
    main(sys.argv[1:])


if __name__ == "__main__":
    {"native": run_native, "paired": run_paired, "plain": run_plain, "step": run_step}[MODE]()
