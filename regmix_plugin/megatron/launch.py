"""What the entry point settles before and right after Megatron-LM parses its arguments.

Before parsing (Megatron's validation asserts on these, so they cannot wait):

* ``--data-schedule-from`` adds ``--phase-transition-iterations``.
* What imports decides the implementation flags (:func:`implementation_flags`, one decision per kernel:
  Transformer Engine, apex's fused weight-gradient GEMM, its softmax kernels, apex itself), probed before
  megatron-core is imported (:mod:`regmix_plugin.megatron.environment`). A plain ``pip install`` (no TE, no
  apex) gets the local implementation and every kernel flag off; a pip-installed TE without apex keeps TE and
  turns gradient-accumulation fusion off; an NGC container gets nothing added. Each added flag is named in one
  printed line, a flag the user gave is never overridden, and a broken TE or ``--transformer-impl
  transformer_engine`` without TE is a one-line error.
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
import os
from dataclasses import dataclass, field

from regmix_plugin.errors import ConfigError
from regmix_plugin.megatron.environment import (
    ABSENT,
    BROKEN,
    GRAD_ACCUM_KERNEL,
    SOFTMAX_KERNELS,
    USABLE,
    Probe,
    importable,
    te_error,
    transformer_engine,
)
from regmix_plugin.schedule import Schedule


@dataclass
class Launch:
    argv: list[str]
    notes: list[str] = field(default_factory=list)  # one printed line per flag or variable the plugin set


@dataclass(frozen=True)
class Kernels:
    """What the launch can use: Transformer Engine's state and which of apex's modules import."""

    te: Probe
    modules: frozenset[str]  # importable among APEX_MODULES

    @classmethod
    def detect(cls) -> "Kernels":
        return cls(transformer_engine(), frozenset(m for m in APEX_MODULES if importable(m)))

    @classmethod
    def of(cls, te: bool, apex: bool | tuple[str, ...] = ()) -> "Kernels":
        """For tests and callers that know: ``apex=True`` for every apex module, or the importable ones."""
        modules = APEX_MODULES if apex is True else tuple(apex or ())
        return cls(Probe(USABLE if te else ABSENT), frozenset(modules))


# apex's modules the decisions below read: the package itself (its fused layer norm), the fused weight-gradient
# GEMM, and the fused softmax kernels.
APEX_MODULES = ("apex", GRAD_ACCUM_KERNEL, *SOFTMAX_KERNELS)


def _peek(argv: list[str]) -> argparse.Namespace:
    """The few flags the launch decisions read, parsed the way Megatron parses them (no abbreviations)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--data-schedule-from")
    p.add_argument("--phase-transition-iterations")
    p.add_argument("--train-samples", type=int)
    p.add_argument("--global-batch-size", type=int)
    p.add_argument("--transformer-impl")
    for flag in ("--no-rope-fusion", "--no-gradient-accumulation-fusion", "--no-masked-softmax-fusion",
                 "--no-persist-layer-norm"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1)
    p.add_argument("--context-parallel-size", type=int, default=1)
    p.add_argument("--use-torch-fsdp2", action="store_true")
    p.add_argument("--use-megatron-fsdp", action="store_true")
    p.add_argument("--overlap-moe-expert-parallel-comm", action="store_true")
    known, _ = p.parse_known_args(argv)
    return known


def implementation_flags(seen: argparse.Namespace, kernels: Kernels) -> tuple[list[str], list[str]]:
    """The flags that let the stock defaults build and run a model with what imports, and one note per reason.

    Each kernel is decided on its own (checked against megatron-core 0.19.2):

    * no Transformer Engine: ``--transformer-impl local`` (Megatron's default is TE) and ``--no-rope-fusion``
      (the fused RoPE kernel is TE's);
    * no ``fused_weight_gradient_mlp_cuda`` (apex): ``--no-gradient-accumulation-fusion`` under either
      implementation, since the GPT output layer is megatron-core's own ColumnParallelLinear, which raises at
      construction without it (with TE this also turns off TE's own wgrad fusion: one flag drives both);
    * local implementation without apex's softmax kernels: ``--no-masked-softmax-fusion`` (FusedScaleMaskSoftmax
      imports them for fp16/bf16 inputs);
    * local implementation without apex: ``--no-persist-layer-norm`` (the layer norm is then torch's, which
      asserts the flag off).

    A flag the user gave is never repeated; a broken TE and ``--transformer-impl transformer_engine`` without TE
    are one-line errors.
    """
    if kernels.te.state == BROKEN:
        raise te_error(kernels.te)
    have_te = kernels.te.usable
    impl = seen.transformer_impl
    if impl == "transformer_engine" and not have_te:
        raise ConfigError("--transformer-impl transformer_engine: Transformer Engine is not installed; pass "
                          "--transformer-impl local (or install transformer_engine)")
    added: list[str] = []
    notes: list[str] = []

    def add(flags: list[str], why: str) -> None:
        new = [f for f in flags if not (f.startswith("--no-") and getattr(seen, f[2:].replace("-", "_")))]
        if new:
            added.extend(new)
            notes.append(f"{why}; added {' '.join(new)}")

    if not have_te:
        add((["--transformer-impl", "local"] if impl is None else []) + ["--no-rope-fusion"],
            "Transformer Engine is not installed")
        impl = impl or "local"
    impl = impl or "transformer_engine"
    if GRAD_ACCUM_KERNEL not in kernels.modules:
        add(["--no-gradient-accumulation-fusion"],
            f"apex's {GRAD_ACCUM_KERNEL} is not importable (megatron-core's output layer needs it for gradient "
            "accumulation fusion)")
    if impl == "local":
        if not set(SOFTMAX_KERNELS) <= kernels.modules:
            add(["--no-masked-softmax-fusion"], "apex's fused softmax kernels are not importable")
        if "apex" not in kernels.modules:
            add(["--no-persist-layer-norm"], "apex is not installed (the local layer norm is torch's)")
    return added, notes


def prepare_launch(argv: list[str], environ: dict | None = None, kernels: Kernels | None = None) -> Launch:
    """The argv Megatron will parse, plus the notes to print; sets ``CUDA_DEVICE_MAX_CONNECTIONS`` in ``environ``.

    ``kernels`` says what imports (Transformer Engine, apex and its kernels); by default it is probed here,
    before megatron-core is imported.
    """
    environ = os.environ if environ is None else environ
    launch = Launch(list(argv))
    seen = _peek(argv)

    if seen.data_schedule_from and seen.phase_transition_iterations is None:
        sched = Schedule.load(seen.data_schedule_from).for_megatron(seen.train_samples, seen.global_batch_size)
        launch.argv += sched.megatron_args()

    added, notes = implementation_flags(seen, Kernels.detect() if kernels is None else kernels)
    launch.argv += added
    launch.notes += notes

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
