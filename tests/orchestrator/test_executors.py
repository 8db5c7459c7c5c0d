"""Executors on a real local Ray instance (2 CPUs, 2 logical GPUs) and in-process."""

import socket

import pytest

from orchestrator.config import RayConf
from orchestrator.executors import ExecutorError, LocalExecutor, RayExecutor, worker_layout
from workloads.measure import MeasureSettings
from workloads.trial import Trial

FAST = MeasureSettings(min_run_time_s=0.01)


def trials(n: int, variant="gqa") -> list[Trial]:
    return [Trial(variant, "torch-sdpa", "prefill", 1, 16 + i, 4, 2, 16, "float32", True) for i in range(n)]


SPREAD = {"scheduling_strategy": "SPREAD"}


@pytest.mark.parametrize(
    "resources,options,expected",
    [
        pytest.param(
            {"CPU": 16, "GPU": 4},
            RayConf(cpu_workers=3),
            (4, {"num_gpus": 1, "num_cpus": 1, **SPREAD}),
            id="one-actor-per-gpu",
        ),
        pytest.param(
            {"CPU": 16},
            RayConf(cpu_workers=3, cpus_per_worker=2),
            (3, {"num_cpus": 2, **SPREAD}),
            id="cpu-workers",
        ),
        pytest.param(
            {"CPU": 17},
            RayConf(address="auto", cpus_per_worker=2),
            (8, {"num_cpus": 2, **SPREAD}),
            id="joined-cluster-every-slot",
        ),
        pytest.param({"CPU": 16}, RayConf(), (2, {"num_cpus": 1, **SPREAD}), id="local-instance-at-most-2"),
        pytest.param({"CPU": 1}, RayConf(), (1, {"num_cpus": 1, **SPREAD}), id="local-instance-1-cpu"),
    ],
)
def test_worker_layout(resources, options, expected):
    assert worker_layout(resources, options) == expected


def test_ray_runs_every_trial_and_streams_results(ray_cluster):
    seen = []
    with RayExecutor(RayConf()) as executor:
        executor.run(trials(5), FAST, lambda t, r: seen.append((t, r)))
    assert sorted(t.seq_len for t, _ in seen) == [16, 17, 18, 19, 20]
    assert all(r.status == "ok" for _, r in seen), [r.error for _, r in seen]
    node = ray_cluster.get_runtime_context().get_node_id()
    assert {r.node for _, r in seen} == {node}
    assert ray_cluster.is_initialized()  # a cluster the executor did not start stays up


def test_ray_failure_in_a_trial_is_a_row(ray_cluster):
    seen = []
    with RayExecutor(RayConf()) as executor:
        executor.run(trials(2, variant="not-registered"), FAST, lambda t, r: seen.append(r))
    assert [r.status for r in seen] == ["error", "error"]
    assert "unknown variant 'not-registered'" in seen[0].error


def test_local_executor_runs_in_process():
    seen = []
    with LocalExecutor() as executor:
        executor.run(trials(2), FAST, lambda t, r: seen.append(r))
    assert [r.status for r in seen] == ["ok", "ok"] and seen[0].node == ""


def test_unreachable_address_fails_fast():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ExecutorError, match=rf"ray.address=127.0.0.1:{port}: nothing answers"):
        with RayExecutor(RayConf(address=f"127.0.0.1:{port}")):
            pass
