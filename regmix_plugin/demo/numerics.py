"""The instruction set the demo's training runs compute with: pinned, so that the demo's numbers do not depend
on which x86-64 CPU runs it (docs/DECISIONS.md 65).

torch chooses its CPU kernels by what the processor offers: ATen's vectorised kernels (AVX512 or AVX2), oneDNN's
JIT kernels (the GELU of the proxy and target models) and MKL's matrix products each have one code path per
instruction set, and the paths round differently. On one machine a run is bit-identical whatever the load, the
process (forked or fresh) or the folder; on a machine with another instruction set the losses differ in the
7th digit, and the demo's small proxies amplify that: under AVX2 kernels instead of AVX512 ones, 6 of the 40
proxy runs moved their evaluation-set loss by 5e-4 to 0.15, the fit moved the RegMix mixture by up to 0.004 per
domain, and its target-model losses moved by 0.003-0.007, while the fixed mixtures (natural, uniform, best
proxy) kept theirs to 1e-4. Pinning every run to the AVX2 paths, which every x86-64 CPU of the last decade has,
makes those CPUs compute the same kernels.

Not covered (the report says which applied): CPUs without AVX2 and FMA, and other architectures (no pin is set
there, so their numbers differ at seed-noise level for the RegMix mixture); MKL on non-Intel CPUs, which ignores
``MKL_CBWR`` and uses its own automatic choice; other versions of torch, MKL or oneDNN, whose kernels may round
differently. The fit (numpy, OpenBLAS, LightGBM on one thread) is not pinned: on the demo's runs its mixture
moved by 1e-13 between AVX512 and AVX2 numpy/OpenBLAS kernels, far below the 1e-8 at which megatron-core's
blend would draw one sample differently.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Read by each library when it starts, so they go into the environment of every run (the study's ``env``),
# before torch is imported there. ATen takes the capability as given: it must only be set where the CPU has it.
PINNED_ISA = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels (elementwise, reductions, softmax, AdamW)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT kernels (GELU forward and backward on CPU)
    "MKL_CBWR": "AVX2",  # MKL's matrix products on Intel CPUs (MKL's conditional numerical reproducibility)
}
NEEDS = frozenset({"avx2", "fma"})  # what ATen's AVX2 kernels execute


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty when they cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def pinned_isa_env(flags: frozenset[str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The environment that pins the demo's runs to the AVX2 kernels, or {} on a CPU that cannot run them."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine not in ("x86_64", "amd64") or not NEEDS <= flags:
        return {}
    return dict(PINNED_ISA)


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name, for the report ("unknown" when it cannot be read)."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def kernels_of_runs(run_dirs) -> list[dict[str, str]]:
    """The distinct (torch, cpu_capability) that the runs' config.yaml record, e.g. [{"torch": "2.14.1",
    "cpu_capability": "AVX2"}]; runs made before the trainer recorded them count as "unrecorded"."""
    import yaml

    seen = set()
    for d in run_dirs:
        path = Path(d) / "config.yaml"
        if not path.is_file():
            continue
        run = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("run") or {}
        seen.add((str(run.get("torch", "unrecorded")), str(run.get("cpu_capability", "unrecorded"))))
    return [{"torch": t, "cpu_capability": c} for t, c in sorted(seen)]


def numerics_record(run_dirs, pins: dict[str, str]) -> dict:
    """What decides the demo's numbers beyond its code and settings, for the report and demo.json."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"cpu": cpu_model(), "machine": platform.machine(), "pinned": dict(pins),
            "kernels_of_runs": kernels_of_runs(run_dirs),
            "versions": {p: ver(p) for p in ("torch", "megatron-core", "numpy", "scipy", "lightgbm")}}
