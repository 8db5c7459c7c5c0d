"""Test session set-up. Triton's CPU interpreter must be chosen before triton is first imported."""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Ray and MLflow started by tests stay quiet and local.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def device() -> str:
    """Where kernels run: compiled on a GPU when there is one, else in Triton's interpreter."""
    return "cuda" if HAS_CUDA else "cpu"
