"""Test session set-up. Triton's CPU interpreter must be chosen before triton is first imported."""

import os
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Ray and MLflow started by tests stay quiet and local.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The test-only fault variant, in this process and in every Ray worker (which inherit both variables;
# set before anything imports the variant registry or starts Ray).
ROOT = str(Path(__file__).resolve().parents[1])
os.environ["ATTNSWEEP_PLUGINS"] = "tests.fault_variant"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))


# Tests that start services (Ray, clusters, MLflow servers, whole CLI runs and scripts) or time
# subprocesses run one after the other in one pytest-xdist worker (`-n 2 --dist loadgroup`, as
# `make test` runs): one local Ray instance per session, and no two of them racing for the same CPUs.
# The kernel, workload and analysis tests fill the other worker.
SERVICE_TESTS = ("orchestrator", "cluster", "benchmarks")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if not HAS_CUDA and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        package = Path(item.path).resolve().relative_to(Path(ROOT) / "tests").parts[0]
        if package in SERVICE_TESTS:
            item.add_marker(pytest.mark.xdist_group("services"))


@pytest.fixture(scope="session")
def device() -> str:
    """Where kernels run: compiled on a GPU when there is one, else in Triton's interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session: 2 CPUs and 2 logical GPUs, so the
    one-actor-per-GPU path runs on a machine without a GPU (actors then compute on the CPU). A host
    without Ray (the GPU host) skips the tests that use it."""
    ray = pytest.importorskip("ray")

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory: default results/, reports/ and mlflow.db land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
