"""Test support: the patches that let stock ``megatron.training`` (megatron-core 0.19) train on CPU with gloo.

Never imported by the package, and never on the GPU path. The end-to-end tests launch
``python -m regmix_plugin.megatron.pretrain_gpt`` under torchrun exactly as a GPU user does, with
``PYTHONPATH=tests/megatron_cpu`` and ``REGMIX_TEST_MEGATRON_CPU=1``; this folder's ``sitecustomize.py`` then
calls :func:`apply` in every rank before the entry point runs.

What megatron.training assumes about CUDA, and what stands in for it here (``PATCHES`` lists them, and
``tests/test_megatron_cpu_patches.py`` checks that megatron-core still has every patched call site, so an
upgrade that moves one fails loudly instead of silently running something else):

* ``initialize_megatron`` asserts ``torch.cuda.is_available()``: ``pretrain`` calls it with ``allow_no_cuda``.
* ``_initialize_distributed`` builds the model-parallel groups and ``_set_random_seed`` seeds the CUDA RNG
  tracker only when ``torch.cuda.device_count() > 0``: the count is 1, ``set_device`` does nothing, and the
  seeding installs megatron-core's inference RNG tracker (its ``fork()`` is a no-op, so dropout draws from
  the global torch RNG; the tests turn dropout off) holding one CPU RNG state, so that checkpoints carry a
  tracker state and resume as on a GPU.
* Tensors made with ``device="cuda"`` / ``torch.cuda.current_device()`` / ``.cuda()``: a torch function mode
  puts them on the CPU, and ``Tensor.type()`` reports the ``torch.cuda.*`` names that
  ``clip_grad_by_total_norm_fp32`` asserts.
* CUDA streams and events (DDP wrapping, gradient buckets) become host stand-ins; ``synchronize`` and the CUDA
  RNG state calls act on the CPU.
* Argument validation reads the GPU's architecture for the ``CUDA_DEVICE_MAX_CONNECTIONS`` rule: it reads 9
  (Hopper), so that rule stays in force and the plugin's handling of it is exercised.

* Transformer Engine and apex are hidden (:data:`GPU_PACKAGES` fail to import, as if not installed), so the
  entry point picks the local implementation with every fused kernel off. On a GPU machine with TE or apex
  installed, the GPU check's CPU reference runs through these patches too: without this it would build TE
  layers (or apex's fused layer norm), which fail on the CPU.
* With ``REGMIX_TEST_CUDA_GENERATOR=1`` random tensors made on ``"cuda"`` draw from a generator of their own,
  seeded by ``torch.manual_seed`` as a GPU's is, instead of the CPU's: the GPU check's rehearsal then sees
  what a GPU run does to the CPU generator (``pretrain()``'s JIT warm-up draws ``torch.rand(device="cuda")``
  before the model is built, which on a GPU leaves the CPU generator untouched).

Not patched, because the plugin itself fixes it on every machine: the dataset helpers' ``make`` run
(``regmix_plugin.megatron.launch.use_prebuilt_dataset_helpers``).

With ``REGMIX_TEST_DIRECT_EVAL=<file>`` (a TP = PP = 1 run), :func:`install_direct_evaluation` also computes,
after each of Megatron's evaluations, every domain's validation loss by a plain forward pass of the same
weights over that domain's validation samples, one sample at a time, and appends it to ``<file>``: the
reference the plugin's per-domain losses are tested against.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time

import torch
from torch.overrides import TorchFunctionMode

# (module, attribute) pairs this module replaces; the pin test checks each still exists and is still used.
PATCHES = (
    ("megatron.training.training", "initialize_megatron"),
    ("megatron.training.arguments", "get_device_arch_version"),
    ("megatron.core.tensor_parallel", "model_parallel_cuda_manual_seed"),
    ("megatron.core.tensor_parallel.random", "model_parallel_cuda_manual_seed"),
    ("torch.cuda", "device_count"),
    ("torch.cuda", "set_device"),
    ("torch.cuda", "current_device"),
    ("torch.cuda", "synchronize"),
    ("torch.cuda", "get_rng_state"),
    ("torch.cuda", "set_rng_state"),
    ("torch.cuda", "Stream"),
    ("torch.cuda", "Event"),
    ("torch.cuda", "current_stream"),
    ("torch.cuda", "stream"),
    ("torch", "manual_seed"),  # only with REGMIX_TEST_CUDA_GENERATOR=1
)

# Modules of Transformer Engine and apex (with its CUDA extensions) that a CPU run must not use.
GPU_PACKAGES = ("transformer_engine", "transformer_engine_torch", "apex", "fused_weight_gradient_mlp_cuda",
                "scaled_masked_softmax_cuda", "scaled_upper_triang_masked_softmax_cuda", "scaled_softmax_cuda",
                "fused_layer_norm_cuda", "amp_C", "flash_attn")
# torch's random factories: made on "cuda", they draw from the CUDA generator on a GPU.
_RANDOM_FACTORIES = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal",
                     "bernoulli"}


def _host_device(device):
    """The CPU for anything that names a CUDA device (a string, a torch.device or a bare index)."""
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu"
    return device


class HiddenPackages:
    """A meta-path finder that makes :data:`GPU_PACKAGES` (and their submodules) fail to import."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in GPU_PACKAGES:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by tests/megatron_cpu: a CPU run)", name=name)
        return None


class CudaOnHost(TorchFunctionMode):
    """Every torch call that would place a tensor on a CUDA device places it on the CPU instead.

    ``generator``: the stand-in for the CUDA generator that random factories made on ``"cuda"`` draw from
    (None: they draw from the CPU generator).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if "device" in kwargs:
            on_cuda = _host_device(kwargs["device"]) != kwargs["device"]
            kwargs["device"] = _host_device(kwargs["device"])
            if on_cuda and self.generator is not None and name in _RANDOM_FACTORIES and kwargs.get("generator") is None:
                kwargs["generator"] = self.generator
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            return args[0]
        if name == "to" and len(args) > 1 and isinstance(args[1], (str, int, torch.device)):
            args = (args[0], _host_device(args[1]), *args[2:])
        if name == "type" and len(args) == 1 and not kwargs:
            name_str = func(*args)
            return name_str.replace("torch.", "torch.cuda.", 1) if ".cuda." not in name_str else name_str
        return func(*args, **kwargs)


class HostStream:
    """Stands in for ``torch.cuda.Stream``: the CPU runs everything in order, so waits are no-ops."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, event=None):
        event = event or HostEvent()
        event.record()
        return event

    def synchronize(self):
        pass


class HostEvent:
    """Stands in for ``torch.cuda.Event``, timing with the wall clock."""

    def __init__(self, *args, **kwargs):
        self._t = None

    def record(self, *args, **kwargs):
        self._t = time.perf_counter()

    def synchronize(self):
        pass

    def wait(self, *args, **kwargs):
        pass

    def query(self):
        return True

    def elapsed_time(self, end):
        return (end._t - self._t) * 1000.0


_MODE: CudaOnHost | None = None


def apply() -> None:
    """Install every patch in ``PATCHES`` (idempotent)."""
    global _MODE
    if _MODE is not None:
        return
    if not any(isinstance(f, HiddenPackages) for f in sys.meta_path):
        sys.meta_path.insert(0, HiddenPackages())  # before megatron-core looks for TE or apex
    import megatron.core.tensor_parallel as tp
    import megatron.core.tensor_parallel.random as tp_random
    import megatron.training.arguments as margs
    import megatron.training.initialize as minit
    import megatron.training.training as mtraining

    stock_initialize = minit.initialize_megatron

    def initialize_megatron(*args, **kwargs):
        kwargs["allow_no_cuda"] = True
        return stock_initialize(*args, **kwargs)

    def seed_inference_tracker(seed, *args, **kwargs):
        tp_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
        # Checkpoints must carry a tracker state, as on a GPU: Megatron refuses to resume from one without.
        tp_random.get_cuda_rng_tracker().states_ = {tp_random._MODEL_PARALLEL_RNG_TRACKER_NAME: torch.get_rng_state()}

    mtraining.initialize_megatron = initialize_megatron
    margs.get_device_arch_version = lambda: 9
    tp.model_parallel_cuda_manual_seed = seed_inference_tracker
    tp_random.model_parallel_cuda_manual_seed = seed_inference_tracker
    torch.cuda.device_count = lambda: 1
    torch.cuda.set_device = lambda *a, **k: None
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    torch.cuda.set_rng_state = lambda *a, **k: None
    torch.cuda.Stream = HostStream
    torch.cuda.Event = HostEvent
    torch.cuda.current_stream = lambda *a, **k: HostStream()
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    generator = None
    if os.environ.get("REGMIX_TEST_CUDA_GENERATOR") == "1":
        generator = torch.Generator()
        stock_manual_seed = torch.manual_seed

        def manual_seed(seed):
            generator.manual_seed(int(seed))  # torch.manual_seed seeds the CUDA generators too
            return stock_manual_seed(seed)

        torch.manual_seed = manual_seed
    _MODE = CudaOnHost(generator)
    _MODE.__enter__()
    if os.environ.get("REGMIX_TEST_DIRECT_EVAL"):
        install_direct_evaluation(os.environ["REGMIX_TEST_DIRECT_EVAL"])


def install_direct_evaluation(path: str) -> None:
    """See the module doc. Wraps ``evaluate_and_print_results`` before the plugin does, so it runs inside."""
    import megatron.training.training as mtraining

    original = mtraining.evaluate_and_print_results

    @functools.wraps(original)
    def evaluate_and_print_results(prefix, forward_step_func, data_iterator, model, iteration, *args, **kwargs):
        result = original(prefix, forward_step_func, data_iterator, model, iteration, *args, **kwargs)
        from megatron.training import get_args

        from regmix_plugin.megatron.datasets import build_for_args

        chunk = model[0]
        chunk.eval()
        record = {"iteration": int(iteration)}
        with torch.no_grad():
            for name, part in build_for_args(get_args(), 1).valid.items():
                loss_sum = tokens = 0.0
                for i in range(len(part)):
                    item = part[i]
                    mask = item.get("attention_mask")
                    out = chunk(item["tokens"][None], item["position_ids"][None],
                                None if mask is None else mask[None], labels=item["labels"][None])
                    loss_mask = item["loss_mask"][None].float()
                    loss_sum += float((out.float() * loss_mask).sum())
                    tokens += float(loss_mask.sum())
                record[name] = loss_sum / tokens
        chunk.train()
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return result

    mtraining.evaluate_and_print_results = evaluate_and_print_results
