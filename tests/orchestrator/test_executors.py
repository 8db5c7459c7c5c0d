"""Executors on a real local Ray instance (2 CPUs, 2 logical GPUs) and in-process."""

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import RayConf
from orchestrator.executors import CUBLAS_WORKSPACE, ExecutorError, LocalExecutor, RayExecutor, worker_layout
from tests.fault_variant import marker_file
from workloads.measure import MeasureSettings
from workloads.trial import Trial, canonical_json

FAST = MeasureSettings(min_run_time_s=0.01)
ROOT = Path(__file__).resolve().parents[2]
CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


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


def test_local_executor_freezes_the_imports_while_it_runs():
    """As in the Ray workers: the collection after each GPU trial does not walk torch's whole heap."""
    frozen_during_trials = []
    with LocalExecutor() as executor:
        executor.run(trials(2), FAST, lambda t, r: frozen_during_trials.append(gc.get_freeze_count()))
    assert len(frozen_during_trials) == 2 and min(frozen_during_trials) > 0
    assert gc.get_freeze_count() == 0  # a process that goes on collects as before


def probe_trial(marker: Path) -> Trial:
    """A test-fault trial that returns q and logs, among others, CUBLAS_WORKSPACE_CONFIG as it runs."""
    params = canonical_json({"action": "ok", "seconds": 0.0, "times": 0, "marker": str(marker)})
    return Trial("test-fault", "torch-ref", "prefill", 1, 16, 2, 2, 8, "float32", True, params)


def cublas_seen(marker: Path) -> set[str]:
    words = marker_file(str(marker), "ok", 16).read_text().split()
    return {word.removeprefix("cublas=") for word in words if word.startswith("cublas=")}


def test_local_trials_run_with_cublas_workspace_fixed(tmp_path, monkeypatch):
    monkeypatch.setenv(CUBLAS, "restored-after-the-test")
    monkeypatch.delenv(CUBLAS)  # as in a fresh shell; an earlier trained trial may have set it here
    with LocalExecutor() as executor:
        executor.run([probe_trial(tmp_path)], FAST, lambda t, r: None)
    assert cublas_seen(tmp_path) == {CUBLAS_WORKSPACE}


@pytest.mark.slow
def test_cli_fixes_cublas_workspace_before_the_first_trial(tmp_path):
    """`python -m orchestrator run executor=local`, as on a GPU host without Ray: the variable is set in
    the process before its first trial (and so before CUDA starts there)."""
    pytest.importorskip("rich")  # orchestrator.sweep's progress display
    env = {k: v for k, v in os.environ.items() if k != CUBLAS}
    trial = probe_trial(tmp_path)
    run = [sys.executable, "-m", "orchestrator", "run", "executor=local", "sweep.name=cublas"]
    overrides = [
        f"results_dir={tmp_path / 'results'}",
        f"reports_dir={tmp_path / 'reports'}",
        "sweep.variants=[test-fault]",
        "sweep.backends=[torch-ref]",
        "sweep.phases=[prefill]",
        f"sweep.axes.seq_len=[{trial.seq_len}]",
        f"sweep.axes.n_heads=[{trial.n_heads}]",
        f"sweep.axes.head_dim=[{trial.head_dim}]",
        f"sweep.params.test-fault.marker={tmp_path}",
        "measure.min_run_time_s=0.01",
        "tracking.enabled=false",
        "report=false",
        "progress=off",
    ]
    done = subprocess.run(
        [*run, *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert cublas_seen(tmp_path) == {CUBLAS_WORKSPACE}


def test_unreachable_address_fails_fast():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ExecutorError, match=rf"ray.address=127.0.0.1:{port}: nothing answers"):
        with RayExecutor(RayConf(address=f"127.0.0.1:{port}")):
            pass
