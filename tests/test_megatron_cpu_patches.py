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
