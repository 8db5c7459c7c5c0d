"""`attnsweep submit` and `attnsweep jobs` against a real two-node Ray cluster on this machine,
started and stopped by cluster/local-up.sh and cluster/local-down.sh (token authentication on, the
job server on 127.0.0.1). The commands run as the user runs them: `python -m orchestrator` in a
process of its own, with the environment the cluster's `env` file gives."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from workloads.environment import code_version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# A cheap sweep: 6 trials of the plain PyTorch reference at tiny shapes, no MLflow, no report.
SWEEP = [
    "sweep.variants=[mha,gqa]",
    "sweep.backends=[torch-ref]",
    "sweep.phases=[prefill]",
    "sweep.axes.seq_len=[16,24,32]",
    "measure.min_run_time_s=0.02",
    "tracking.enabled=false",
    "report=false",
]


def free_ports(n: int) -> list[int]:
    """n distinct ports nothing listens on (all held until all are chosen)."""
    probes = [socket.socket() for _ in range(n)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def client_env(env: dict, env_file: Path) -> dict:
    """`source STATE/env` on top of `env`: its `unset` and `export` lines."""
    env = dict(env)
    for line in env_file.read_text().splitlines():
        command, _, rest = line.partition(" ")
        if command == "unset":
            for name in rest.split():
                env.pop(name, None)
        elif command == "export":
            name, _, value = rest.partition("=")
            env[name] = value
    return env


def process_groups_alive(pgids: list[int]) -> list[int]:
    alive = []
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            alive.append(pgid)
        except ProcessLookupError:
            pass
    return alive


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of 1 CPU each, on ports of their own (the session's in-process Ray
    instance may be running); yields a client's environment, as the cluster's `env` file sets it.
    Ray's socket paths must stay short, hence a state directory right under /tmp."""
    state = Path(tempfile.mkdtemp(prefix="asw-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    names = ["GCS", "DASHBOARD", "CLIENT", "HEAD_AGENT", "WORKER_AGENT"]
    env.update(
        {
            f"ATTNSWEEP_{name}_PORT": str(port)
            for name, port in zip(names, free_ports(len(names)), strict=True)
        }
    )
    up = subprocess.run(
        ["bash", str(ROOT / "cluster/local-up.sh"), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    pgids = [
        int((state / f"{node}.pid").read_text())
        for node in ("head", "worker")
        if (state / f"{node}.pid").exists()
    ]
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield client_env(env, state / "env")
    finally:
        down = subprocess.run(
            ["bash", str(ROOT / "cluster/local-down.sh"), str(state)],
            env={**env, "ATTNSWEEP_STOP_GRACE_S": "5"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
        assert not process_groups_alive(pgids), "local-down.sh left processes of the cluster running"
        shutil.rmtree(state, ignore_errors=True)


def attnsweep(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def jobs_listed(env: dict) -> dict[str, str]:
    """submission id -> status, from `attnsweep jobs`."""
    listed = attnsweep(env, "jobs")
    assert listed.returncode == 0, listed.stderr
    return {
        line.split()[0]: line.split()[1]
        for line in listed.stdout.splitlines()
        if line.startswith("attnsweep-")
    }


def test_submit_wait_runs_the_sweep_on_both_nodes(cluster, tmp_path):
    results = tmp_path / "results"
    # Bad input is refused with one line (exit 2) before anything is sent: the listing below shows
    # only the good sweep.
    for bad, key in [
        (["sweep.variants=[nope]", f"results_dir={results}"], "sweep.variants"),
        (["results_dir=relative/results"], "results_dir=relative/results"),
    ]:
        refused = attnsweep(cluster, "submit", *bad)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and key in refused.stderr

    submitted = attnsweep(cluster, "submit", "--wait", *SWEEP, f"results_dir={results}")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted sweep smoke as attnsweep-smoke-" in submitted.stdout
    assert "[6/6]" in submitted.stdout and "SUCCEEDED" in submitted.stdout  # the job's log, streamed

    frame = pd.read_parquet(results / "smoke")
    assert len(frame) == 6 and frame["trial_id"].is_unique and set(frame["status"]) == {"ok"}
    # One worker per CPU slot of the cluster (1 + 1), so both nodes ran trials.
    assert frame["node"].nunique() == 2, frame["node"]
    assert set(frame["host"]) == {socket.gethostname()}
    assert set(frame["code_version"]) == {code_version()}  # the submitter's, not "unknown"

    # The same sweep again is found, not run twice; its logs are there to read.
    job_id = submitted.stdout.split("submitted sweep smoke as ")[1].split()[0]
    again = attnsweep(cluster, "submit", *reversed(SWEEP), f"results_dir={results}")
    assert again.returncode == 0, again.stderr
    assert f"already submitted as {job_id}: SUCCEEDED" in again.stdout
    assert len(pd.read_parquet(results / "smoke")) == 6
    assert list(jobs_listed(cluster).items()) == [(job_id, "SUCCEEDED")]
    logs = attnsweep(cluster, "jobs", "logs", job_id)
    assert logs.returncode == 0 and "sweep smoke run" in logs.stdout and "6 ok" in logs.stdout


def test_jobs_stop_and_delete_a_running_sweep(cluster, tmp_path):
    long_sweep = [
        *SWEEP[:4],
        "measure.min_run_time_s=600",
        "tracking.enabled=false",
        f"results_dir={tmp_path}",
    ]
    submitted = attnsweep(cluster, "submit", *long_sweep)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split("submitted sweep smoke as ")[1].split()[0]
    assert f"attnsweep jobs stop {job_id}" in submitted.stdout

    stopped = attnsweep(cluster, "jobs", "stop", job_id)  # STOPPED: it was still running
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{job_id}: STOPPED", stopped.stderr
    again = attnsweep(cluster, "submit", *long_sweep)  # a stopped sweep is not submitted again...
    assert again.returncode == 1 and f"attnsweep jobs delete {job_id}" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    deleted = attnsweep(cluster, "jobs", "delete", job_id)  # ...until it is deleted
    assert deleted.returncode == 0, deleted.stderr
    assert job_id not in jobs_listed(cluster)


def test_unreachable_job_server_exits_1_with_one_line(tmp_path):
    address = f"http://127.0.0.1:{free_ports(1)[0]}"  # free a moment ago: nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "RAY_API_SERVER_ADDRESS"}
    refused = attnsweep(env, "submit", "--address", address, *SWEEP, f"results_dir={tmp_path}", timeout=60)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--address {address}: nothing answers" in lines[0]
