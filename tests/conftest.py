"""Shared pytest setup: GPU tests are skipped without CUDA; everything else runs on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REGMIX_DATA = REPO_ROOT.parent / "shared" / "data" / "regmix-pile-1m"

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
