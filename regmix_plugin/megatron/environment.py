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
