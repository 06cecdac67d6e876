"""Pins tests/megatron_cpu/cpu_patches.py to the installed megatron-core: each patch still has its target and
the call site it exists for. A megatron-core upgrade that moves one fails here, by name, instead of making the
end-to-end tests train something else on CPU."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys

import pytest
from proxy_helpers import REPO

sys.path.insert(0, str(REPO / "tests" / "megatron_cpu"))
import cpu_patches  # noqa: E402

# Where megatron-core relies on each patched object, as (module, function, text in its source).
CALL_SITES = {
    ("megatron.training.training", "initialize_megatron"): [
        ("megatron.training.initialize", "initialize_megatron", "assert torch.cuda.is_available()"),
        ("megatron.training.training", "pretrain", "initialize_megatron("),
    ],
    ("megatron.training.arguments", "get_device_arch_version"): [
        ("megatron.training.arguments", "validate_args", "get_device_arch_version() < 10"),
    ],
    ("megatron.core.tensor_parallel", "model_parallel_cuda_manual_seed"): [
        ("megatron.training.initialize", "_set_random_seed", "tensor_parallel.model_parallel_cuda_manual_seed("),
    ],
    ("megatron.core.tensor_parallel.random", "model_parallel_cuda_manual_seed"): [
        ("megatron.core.tensor_parallel.random", "initialize_rng_tracker", "inference_rng_tracker"),
    ],
    ("torch.cuda", "device_count"): [
        ("megatron.training.initialize", "_initialize_distributed", "if device_count > 0 and not skip_model_parallel_init"),
        ("megatron.training.initialize", "_set_random_seed", "torch.cuda.device_count() > 0"),
    ],
    ("torch.cuda", "set_device"): [
        ("megatron.training.initialize", "_initialize_distributed", "torch.cuda.set_device(args.local_rank)"),
    ],
    ("torch.cuda", "current_device"): [
        ("megatron.core.utils", "get_batch_on_this_tp_rank", "device=torch.cuda.current_device()"),
    ],
    ("torch.cuda", "synchronize"): [],  # timers and memory reports; harmless on CPU once a no-op
    ("torch.cuda", "get_rng_state"): [
        ("megatron.training.checkpointing", "get_rng_state", "torch.cuda.get_rng_state()"),
    ],
    ("torch.cuda", "set_rng_state"): [
        ("megatron.training.checkpointing", "load_checkpoint", "torch.cuda.set_rng_state("),
    ],
    ("torch.cuda", "Stream"): [
        ("megatron.training.models.dist_utils", "_ddp_wrap", "torch.cuda.Stream()"),
    ],
    ("torch.cuda", "Event"): [],
    ("torch.cuda", "current_stream"): [
        ("megatron.training.models.dist_utils", "_ddp_wrap", "torch.cuda.current_stream()"),
    ],
    ("torch.cuda", "stream"): [
        ("megatron.training.models.dist_utils", "_ddp_wrap", "torch.cuda.stream("),
    ],
    ("torch", "manual_seed"): [
        ("megatron.training.initialize", "_set_random_seed", "torch.manual_seed(seed)"),
    ],
}


def test_every_patch_is_pinned():
    assert set(CALL_SITES) == set(cpu_patches.PATCHES)


@pytest.mark.parametrize("target", cpu_patches.PATCHES, ids=lambda t: ".".join(t))
def test_patched_objects_and_their_call_sites_still_exist(target):
    module, attr = target
    assert hasattr(importlib.import_module(module), attr), f"{module}.{attr} is gone; update cpu_patches.py"
    for mod, fn, text in CALL_SITES[target]:
        source = inspect.getsource(getattr(importlib.import_module(mod), fn))
        assert text in source, f"{mod}.{fn} no longer contains {text!r}; check what cpu_patches.{attr} is for"


def test_the_other_facts_the_patches_rely_on():
    from megatron.core.optimizer import clip_grads
    from megatron.training import checkpointing, initialize

    assert "allow_no_cuda" in inspect.signature(initialize.initialize_megatron).parameters
    # Tensor.type() must report CUDA names for the gradient clipping assert.
    assert "'torch.cuda.FloatTensor'" in inspect.getsource(clip_grads.clip_grad_by_total_norm_fp32)
    # A checkpoint without RNG tracker states cannot be resumed, hence the tracker's one CPU state.
    assert "if not rng_state['rng_tracker_states']:" in inspect.getsource(checkpointing.load_checkpoint)


def test_the_patches_put_cuda_tensors_on_the_host():
    """In a fresh interpreter (the patches change torch globally)."""
    code = (
        "import cpu_patches, torch; cpu_patches.apply(); "
        "t = torch.zeros(3, device='cuda'); u = torch.ones(2).cuda(); v = torch.ones(2).to('cuda:0'); "
        "w = torch.empty(2, device=torch.cuda.current_device()); s = torch.cuda.Stream(); s.wait_stream(s); "
        "print(t.device, u.device, v.device, w.device, t.type(), torch.cuda.device_count())"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "megatron_cpu"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["cpu", "cpu", "cpu", "cpu", "torch.cuda.FloatTensor", "1"]


def test_the_warm_up_draws_on_cuda_before_the_model_is_built():
    """Why the GPU check compares one checkpoint on both devices (DECISIONS): pretrain() draws on "cuda" after
    seeding and before building the model, so a GPU run and a CPU run of one seed start from other weights."""
    from megatron.training import initialize, training

    warmup = inspect.getsource(initialize._warmup_jit_function)
    assert 'torch.rand(' in warmup and 'device="cuda"' in warmup
    pretrain = inspect.getsource(training.pretrain)
    assert pretrain.index("set_jit_fusion_options(") < pretrain.index("setup_model_and_optimizer(")


def test_the_cuda_generator_stand_in_leaves_the_cpu_generator_alone():
    """With REGMIX_TEST_CUDA_GENERATOR=1 a draw on "cuda" moves its own generator, as on a GPU; without it, the
    CPU generator (what the old GPU check's CPU reference did, unseen by a rehearsal whose runs were all CPU)."""
    code = (
        "import cpu_patches, torch; cpu_patches.apply(); torch.manual_seed(7); torch.rand(5, device='cuda'); "
        "after = torch.rand(3); torch.manual_seed(7); fresh = torch.rand(3); print(bool(torch.equal(after, fresh)))"
    )
    seen = {}
    for flag in ("1", "0"):
        env = dict(os.environ, REGMIX_TEST_CUDA_GENERATOR=flag,
                   PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "megatron_cpu"), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        seen[flag] = out.stdout.split()[-1]
    assert seen == {"1": "True", "0": "False"}


def test_a_cpu_run_hides_transformer_engine_and_apex(tmp_path):
    """Point 4 of issue 23: on a GPU machine with TE and apex, the GPU check's CPU reference child must not build
    TE layers or apex's fused layer norm (both fail on the CPU). A complete-looking fake TE and apex stand in
    for the installed ones; the CPU patches hide them, so megatron-core imports and the entry point's flags are
    those of the local implementation with every fused kernel off."""
    fake = tmp_path / "site"
    (fake / "transformer_engine" / "pytorch").mkdir(parents=True)
    (fake / "transformer_engine" / "__init__.py").write_text('__version__ = "2.8.0"\n')
    (fake / "transformer_engine" / "pytorch" / "__init__.py").write_text("")
    (fake / "apex").mkdir()
    (fake / "apex" / "__init__.py").write_text("")
    for kernel in ("fused_weight_gradient_mlp_cuda", "scaled_masked_softmax_cuda",
                   "scaled_upper_triang_masked_softmax_cuda", "scaled_softmax_cuda"):
        (fake / f"{kernel}.py").write_text("")
    code = ("import sys; from regmix_plugin.megatron.launch import prepare_launch; "
            "import megatron.core.fp8_utils as f; "
            "print(' '.join(prepare_launch(['--num-layers', '2'], environ={}).argv)); print('HAVE_TE', f.HAVE_TE)")
    env = dict(os.environ, REGMIX_TEST_MEGATRON_CPU="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(fake), str(REPO / "tests" / "megatron_cpu")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-2:] == [
        "--num-layers 2 --transformer-impl local --no-rope-fusion --no-gradient-accumulation-fusion "
        "--no-masked-softmax-fusion --no-persist-layer-norm", "HAVE_TE False"]
