"""What the Python environment offers a Megatron launch, found out before megatron-core is imported.

A GPU user's environment is usually an NGC container (its own torch, Transformer Engine, apex and
megatron-core), sometimes a plain ``pip install`` (no TE, no apex), sometimes something in between (a
pip-installed TE without apex, or TE's core package without its torch extension). The entry point decides its
flags from what actually imports, and refuses what megatron-core itself cannot survive:

* :func:`transformer_engine` imports what megatron-core 0.19 imports from TE at import time
  (``transformer_engine``, its ``__version__``, ``transformer_engine.pytorch``). With a package that lacks
  ``transformer_engine.pytorch``, ``megatron.core.fp8_utils`` raises ``ModuleNotFoundError``; without
  ``__version__``, ``megatron.core.tensor_parallel.generalized_tensor_parallelism`` raises ``AttributeError``:
  in both cases megatron-core cannot be imported at all, so a broken TE is a one-line error, not a fallback.
* :func:`importable` imports a module (apex's CUDA extensions are checked by import, not by ``find_spec``:
  a build against another torch is found but fails to load, and megatron-core then treats it as absent).
* :func:`megatron_core_version` reads megatron-core's version from its files without importing it (importing
  it with a broken TE is exactly what must not happen first).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from dataclasses import dataclass

from regmix_plugin.errors import ConfigError, one_line

USABLE, ABSENT, BROKEN = "usable", "absent", "broken"

# The megatron-core line this plugin is written and tested against (setup.py pins the same).
TESTED_MEGATRON_CORE = (0, 19)

# apex's CUDA extensions that megatron-core's fused softmax imports (FusedScaleMaskSoftmax, local attention).
SOFTMAX_KERNELS = ("scaled_masked_softmax_cuda", "scaled_upper_triang_masked_softmax_cuda", "scaled_softmax_cuda")
# apex's fused weight-gradient GEMM: megatron-core's own ColumnParallelLinear (the GPT output layer, under
# either transformer implementation) raises at construction when gradient_accumulation_fusion is on without it.
GRAD_ACCUM_KERNEL = "fused_weight_gradient_mlp_cuda"


@dataclass(frozen=True)
class Probe:
    state: str  # USABLE, ABSENT or BROKEN
    detail: str = ""  # the version when usable, what is wrong when broken

    @property
    def usable(self) -> bool:
        return self.state == USABLE


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _where(module) -> str:
    path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), "")
    return os.path.dirname(path) if path and path.endswith("__init__.py") else (path or "?")


def transformer_engine() -> Probe:
    """Transformer Engine as megatron-core will import it: usable, absent, or broken (and how)."""
    if not _found("transformer_engine"):
        return Probe(ABSENT)
    try:
        import torch  # noqa: F401  (TE's extension links against torch, which must be loaded first)

        te = importlib.import_module("transformer_engine")
    except Exception as e:  # a broken install can raise anything from ImportError to OSError
        return Probe(BROKEN, f"'import transformer_engine' fails ({type(e).__name__}: {one_line(e)[:200]})")
    where = _where(te)
    version = getattr(te, "__version__", None)
    if not isinstance(version, str):
        return Probe(BROKEN, f"transformer_engine at {where} has no __version__ (megatron-core reads it)")
    try:
        from packaging.version import Version

        Version(version)
    except Exception:
        return Probe(BROKEN, f"transformer_engine at {where} has version {version!r}, which megatron-core cannot parse")
    try:
        importlib.import_module("transformer_engine.pytorch")
    except Exception as e:
        return Probe(BROKEN, f"transformer_engine {version} at {where} has no working PyTorch extension "
                             f"('import transformer_engine.pytorch' fails: {type(e).__name__}: {one_line(e)[:200]})")
    return Probe(USABLE, version)


def te_error(probe: Probe) -> ConfigError:
    """The one-line error for a broken Transformer Engine: what is wrong and the two ways out."""
    return ConfigError(f"Transformer Engine: {probe.detail}, and megatron-core cannot be imported with it; install "
                       "its PyTorch extension for this torch (pip install --no-build-isolation "
                       "'transformer_engine[pytorch]') or uninstall it (pip uninstall transformer_engine "
                       "transformer_engine_torch) to run the local implementation")


def importable(module: str) -> bool:
    """Whether ``module`` imports here (torch first: apex's extensions link against it)."""
    if not _found(module):
        return False
    try:
        import torch  # noqa: F401

        importlib.import_module(module)
        return True
    except Exception:
        return False


def megatron_core_version() -> tuple[tuple[int, int, int], str] | None:
    """megatron-core's (major, minor, patch) and its folder, read from package_info.py without importing it."""
    try:
        spec = importlib.util.find_spec("megatron")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        info = os.path.join(root, "core", "package_info.py")
        try:
            with open(info, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        parts = [re.search(rf"^{k}\s*=\s*(\d+)", text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return tuple(int(m.group(1)) for m in parts), os.path.join(root, "core")
    return None


def check_megatron_core() -> str | None:
    """Refuse a megatron-core this plugin cannot run on; a note (or None) for one newer than the tested line.

    With ``pip install --no-deps`` into a container nothing enforces setup.py's pin, so the entry point checks
    it before importing megatron-core, whose older releases lack modules the plugin imports.
    """
    found = megatron_core_version()
    want = ".".join(map(str, TESTED_MEGATRON_CORE))
    if found is None:
        raise ConfigError(f"megatron-core: not installed; pip install 'megatron-core>={want},<0.20' (or use an "
                          f"environment that has megatron-core {want})")
    version, where = found
    shown = ".".join(map(str, version))
    if version[:2] < TESTED_MEGATRON_CORE:
        raise ConfigError(f"megatron-core: {shown} at {where} is older than {want}, which regmix_plugin needs; use an "
                          f"environment with megatron-core {want}.x (e.g. a venv beside this one: python -m venv "
                          f"--system-site-packages v && v/bin/pip install 'megatron-core>={want},<0.20')")
    if version[:2] > TESTED_MEGATRON_CORE:
        return f"megatron-core {shown} is newer than the tested {want}.x; continuing (report problems with its version)"
    return None


# ---- the GPU check's pre-flight: what a launch on this machine needs beyond Python packages -------------------

# The oldest Linux driver each CUDA major release runs on (NVIDIA's CUDA compatibility table, minor-version
# compatibility): a torch built for CUDA 12.x needs >= 525.60.13, for 13.x >= 580.65.06.
MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}
# Python packages the plugin's GPU paths import beyond torch and megatron-core, with what to install.
REQUIRED_PACKAGES = {"numpy": "numpy", "yaml": "pyyaml", "pydantic": "'pydantic>=2.7,<3'", "psutil": "psutil",
                     "tensorboard": "tensorboard", "tqdm": "tqdm"}
SHM_MINIMUM = 1 << 30  # bytes; Docker's default /dev/shm is 64 MiB


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver's version (``nvidia-smi``, else /proc/driver/nvidia/version), or None."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
        first = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""
        if re.fullmatch(r"\d+(\.\d+)+", first):
            return first
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+(?:\.\d+)+)", f.read())
        return m.group(1) if m else None
    except OSError:
        return None


def cuda_problems(torch_version: str, torch_cuda: str | None, gpus: int, driver: str | None,
                  torch_warnings: list[str]) -> list[str]:
    """Why no GPU can be used, one line per cause; [] when torch sees a GPU and the driver is recent enough.

    torch's own warnings from initialising CUDA (such as "The NVIDIA driver on your system is too old") are
    passed through verbatim, one line each: they are the most precise diagnosis there is.
    """
    lines = [f"torch says: {' '.join(w.split())}" for w in torch_warnings]
    if torch_cuda is None:
        return lines + [f"torch {torch_version} is a CPU-only build: run where torch is a CUDA build (in an NGC "
                        "container: make gpu-check PYTHON=python3)"]
    need = MIN_DRIVER.get(_version_tuple(torch_cuda)[0])
    if driver is None:
        if gpus == 0:
            lines.append("no NVIDIA driver found (no nvidia-smi, no /proc/driver/nvidia/version): run on a GPU machine "
                         "or in a container started with --gpus all")
    elif need and _version_tuple(driver) < need:
        lines.append(f"NVIDIA driver {driver} is older than torch {torch_version} (CUDA {torch_cuda}) needs "
                     f"(>= {'.'.join(map(str, need))}): run in an environment whose torch matches the driver (an "
                     "NGC container made for it: make gpu-check PYTHON=python3), or update the driver")
    if gpus == 0 and len(lines) == len(torch_warnings):
        lines.append(f"no CUDA GPU visible (torch.cuda.device_count() == 0, CUDA_VISIBLE_DEVICES="
                     f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, driver {driver})")
    return lines


def compiler_problems() -> list[str]:
    """Triton compiles a small C launcher with the system's compiler and Python's headers the first time a
    ``torch.compile``d kernel runs; Megatron's fused kernels are ``torch.compile``d (megatron.core.jit), and
    ``pretrain()`` runs them in its JIT warm-up, so without either every launch fails there."""
    import shutil
    import sysconfig

    lines = []
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        lines.append("no C compiler ($CC, or cc, gcc or clang on PATH): Triton builds a launcher with one for "
                     "torch.compile, which Megatron's fused kernels use; install one (apt-get install gcc)")
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        lines.append(f"no Python headers ({os.path.join(include, 'Python.h')} is missing): Triton compiles against "
                     "them for torch.compile; install them (apt-get install python3-dev, or your Python's -dev package)")
    return lines


def shm_problem(path: str = "/dev/shm", minimum: int = SHM_MINIMUM) -> str | None:
    """A small shared-memory mount fails NCCL across GPUs and the data loader's worker processes."""
    try:
        st = os.statvfs(path)
    except OSError:
        return f"{path} is missing: NCCL and the data loader's workers share memory through it; mount it"
    size = st.f_frsize * st.f_blocks
    if size < minimum:
        return (f"{path} holds {size / 2**20:.0f} MiB: NCCL and the data loader's workers share memory through it "
                "(Docker's default is 64 MiB); start the container with --shm-size=16g or --ipc=host")
    return None


def missing_packages() -> list[str]:
    """One line per Python package the GPU paths import that does not import here (a --no-deps install)."""
    lines = []
    for module, requirement in REQUIRED_PACKAGES.items():
        if not importable(module):
            lines.append(f"Python package {module} does not import: pip install {requirement}")
    if importable("pydantic"):
        import pydantic

        if not str(getattr(pydantic, "VERSION", "2")).startswith("2"):
            lines.append(f"pydantic {pydantic.VERSION} is installed; the plugin needs 2.x: pip install "
                         f"{REQUIRED_PACKAGES['pydantic']}")
    return lines
