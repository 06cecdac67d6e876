"""What the entry point settles before and right after Megatron-LM parses its arguments.

Before parsing (Megatron's validation asserts on these, so they cannot wait):

* ``--data-schedule-from`` adds ``--phase-transition-iterations``.
* Without Transformer Engine or apex (a plain ``pip install``) the stock defaults cannot build or run a model:
  ``--transformer-impl transformer_engine`` and the fused RoPE kernel need TE; the local implementation's
  gradient-accumulation fusion, fused masked softmax (fp16/bf16) and persistent layer norm need apex's CUDA
  extensions (``_LOCAL_KERNELS``). The flags that make the local
  implementation work are added, each named in one printed line; a flag the user gave is never overridden,
  and asking for TE without TE is a one-line error.
* Tensor or context parallelism on GPUs before Blackwell needs ``CUDA_DEVICE_MAX_CONNECTIONS=1`` in the
  environment before CUDA starts; Megatron asserts it. When it is unset it is set to 1 here (and said).

After parsing: a schedule run resumes from its own ``--save`` (each phase ends with Megatron saving and
exiting, and the same command is relaunched), and a finished schedule exits at once.

And once per process: megatron-core's wheel ships the compiled dataset helpers but no Makefile, and
``initialize_megatron`` runs ``make`` on rank 0 anyway, which fails and calls ``sys.exit(1)`` while the other
ranks wait at a barrier. :func:`use_prebuilt_dataset_helpers` skips that build when the helpers import.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, field

from regmix_plugin.errors import ConfigError
from regmix_plugin.schedule import Schedule


@dataclass
class Launch:
    argv: list[str]
    notes: list[str] = field(default_factory=list)  # one printed line per flag or variable the plugin set


# Kernels the local implementation uses by default, the module that provides each (apex's CUDA extensions),
# and the flag that turns its use off.
_LOCAL_KERNELS = (
    ("fused_weight_gradient_mlp_cuda", "--no-gradient-accumulation-fusion"),
    ("scaled_masked_softmax_cuda", "--no-masked-softmax-fusion"),
    ("apex", "--no-persist-layer-norm"),
)


def _peek(argv: list[str]) -> argparse.Namespace:
    """The few flags the launch decisions read, parsed the way Megatron parses them (no abbreviations)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--data-schedule-from")
    p.add_argument("--phase-transition-iterations")
    p.add_argument("--transformer-impl")
    p.add_argument("--no-rope-fusion", action="store_true")
    for _, flag in _LOCAL_KERNELS:
        p.add_argument(flag, action="store_true")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1)
    p.add_argument("--context-parallel-size", type=int, default=1)
    p.add_argument("--use-torch-fsdp2", action="store_true")
    p.add_argument("--use-megatron-fsdp", action="store_true")
    p.add_argument("--overlap-moe-expert-parallel-comm", action="store_true")
    known, _ = p.parse_known_args(argv)
    return known


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def prepare_launch(argv: list[str], environ: dict | None = None, installed=_installed) -> Launch:
    """The argv Megatron will parse, plus the notes to print; sets ``CUDA_DEVICE_MAX_CONNECTIONS`` in ``environ``.

    ``installed(module)`` says whether a module imports (Transformer Engine, apex and its kernels).
    """
    environ = os.environ if environ is None else environ
    launch = Launch(list(argv))
    seen = _peek(argv)

    if seen.data_schedule_from and seen.phase_transition_iterations is None:
        launch.argv += Schedule.load(seen.data_schedule_from).megatron_args()

    have_te = installed("transformer_engine")
    impl = seen.transformer_impl
    if impl == "transformer_engine" and not have_te:
        raise ConfigError("--transformer-impl transformer_engine: Transformer Engine is not installed; pass "
                          "--transformer-impl local (or install transformer_engine)")
    added = []
    if impl is None and not have_te:
        added += ["--transformer-impl", "local"]
        impl = "local"
    if not have_te and not seen.no_rope_fusion:
        added.append("--no-rope-fusion")  # the fused RoPE kernel is Transformer Engine's
    if impl == "local":
        missing = [(module, flag) for module, flag in _LOCAL_KERNELS if not installed(module)]
        added += [flag for module, flag in missing if not getattr(seen, flag[2:].replace("-", "_"))]
    if added:
        what = "Transformer Engine and apex are" if not have_te and not installed("apex") else (
            "Transformer Engine is" if not have_te else "apex's kernels are")
        launch.argv += added
        launch.notes.append(f"{what} not installed; added {' '.join(added)}")

    fsdp = seen.use_torch_fsdp2 or seen.use_megatron_fsdp or seen.overlap_moe_expert_parallel_comm
    if (seen.tensor_model_parallel_size > 1 or seen.context_parallel_size > 1) and not fsdp \
            and "CUDA_DEVICE_MAX_CONNECTIONS" not in environ:
        environ["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
        launch.notes.append("set CUDA_DEVICE_MAX_CONNECTIONS=1 (Megatron requires it for tensor or context "
                            "parallelism before Blackwell)")
    return launch


def use_prebuilt_dataset_helpers() -> bool:
    """Skip ``initialize_megatron``'s ``make`` of the dataset helpers when the wheel's prebuilt ones import.

    Returns whether the build was skipped. A source checkout without compiled helpers keeps Megatron's build.
    """
    try:
        from megatron.core.datasets import helpers_cpp  # noqa: F401
    except ImportError:
        return False
    import megatron.core.datasets.utils as dataset_utils

    dataset_utils.compile_helpers = lambda: None
    return True


def checkpointed_iteration(save_dir: str | None) -> int | None:
    """The iteration in Megatron's ``latest_checkpointed_iteration.txt`` under ``save_dir``, or None."""
    if not save_dir:
        return None
    tracker = os.path.join(save_dir, "latest_checkpointed_iteration.txt")
    try:
        with open(tracker, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--save: {tracker} holds {text!r}, not an iteration; a schedule run resumes from "
                          "its own checkpoints, so point --save at a fresh folder") from None


def resume_schedule(args: argparse.Namespace) -> tuple[bool, list[str]]:
    """Point a schedule run at its own checkpoint; ``(False, notes)`` when the whole schedule is done.

    The first launch starts from ``--load`` if given (for instance a base model with ``--finetune``). Every
    later launch resumes from ``--save``, where the previous phase left its checkpoint, with the optimizer
    and RNG state and the iteration counter as saved there.
    """
    done = checkpointed_iteration(args.save)
    if done is None:
        return True, []
    total = args.train_samples // args.global_batch_size
    if done >= total:
        return False, [f"the schedule is complete: {args.save} holds iteration {done} of {total}; nothing to train"]
    notes = []
    if args.load != args.save or args.finetune or args.no_load_optim or args.no_load_rng:
        notes.append(f"resuming the schedule from --save {args.save} (iteration {done})")
    args.load = args.save
    args.finetune = False
    args.no_load_optim = False
    args.no_load_rng = False
    return True, notes
