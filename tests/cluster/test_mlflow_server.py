"""cluster/mlflow-server.sh: a real MLflow tracking server on loopback (SQLite backend, artifacts
served through it); a sweep logs to it over HTTP and its runs are visible to `mlflow.search_runs`."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

# Hosts without mlflow (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")

import mlflow

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """The server and the workers it forked: its process group, by the id this test started."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)  # mlflow exits once its server has shut down
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    try:  # a worker that outlived it: still in the group, so still ours
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"}
    env.pop("MLFLOW_BACKEND_STORE_URI", None)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(ROOT / "cluster/mlflow-server.sh"), str(tmp_path / "server")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped whole, nothing else with it
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the MLflow server did not come up in 120 s"
                time.sleep(0.3)
        yield uri, tmp_path / "server"
    finally:
        stop_group(server)
        log.close()


def test_sweep_logs_to_the_tracking_server_over_http(mlflow_server, in_tmp, monkeypatch):
    uri, server_dir = mlflow_server
    code = main(
        [
            "run",
            "sweep.variants=[mha,mqa]",
            "sweep.backends=[torch-ref]",
            "sweep.phases=[prefill]",
            "sweep.axes.seq_len=[16]",
            "measure.min_run_time_s=0.01",
            "executor=local",
            "progress=off",
            f"tracking.uri={uri}",
        ]
    )
    assert code == 0

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["variant"] for r in children} == {"mha", "mqa"}
    assert all(r.data.metrics["latency_ms"] > 0 for r in children)
    # Artifacts went through the server into its artifact root; the backend is its SQLite file.
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parents[0].info.run_id)}
    assert artifacts == {"dataset", "report"}
    assert any((server_dir / "artifacts").rglob("*.parquet")) and (server_dir / "mlflow.db").is_file()
