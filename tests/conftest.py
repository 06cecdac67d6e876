"""Shared pytest setup: GPU tests are skipped without CUDA; everything else runs on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REGMIX_DATA = REPO_ROOT.parent / "shared" / "data" / "regmix-pile-1m"
SHARED_OLMIX_DATA = REPO_ROOT.parent / "shared" / "data" / "olmix-dclm"

# Keep torch and BLAS from oversubscribing the 2 cores when tests spawn workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def regmix_data() -> Path:
    """RegMix's released 1M-proxy results, beside the checkout; tests that need them skip without them."""
    if not (SHARED_REGMIX_DATA / "train_mixture_1m.csv").is_file():
        pytest.skip(f"RegMix data not found at {SHARED_REGMIX_DATA}")
    return SHARED_REGMIX_DATA


@pytest.fixture(scope="session")
def olmix_data() -> Path:
    """Olmix's DCLM topic swarm (127 runs, 24 domains, 110 downstream BPB metrics), beside the checkout."""
    if not (SHARED_OLMIX_DATA / "dclm_ratios.csv").is_file():
        pytest.skip(f"Olmix DCLM data not found at {SHARED_OLMIX_DATA}")
    return SHARED_OLMIX_DATA
