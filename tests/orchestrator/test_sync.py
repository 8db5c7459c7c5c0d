"""Tracking outages against real MLflow stores: a sweep whose tracking server is down, or dies
mid-sweep, still writes every row to Parquet and warns once; `attnsweep sync` then logs exactly the
missing rows (a SQLite store, and a real `mlflow server` subprocess killed and restarted)."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

# Hosts without mlflow (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")

from mlflow import MlflowClient

from analysis.store import read_results
from orchestrator.cli import main
from orchestrator.tracking import CLIENT_ENV, experiment_id, make_client

# The test-only fault variant (tests/fault_variant.py): each call sleeps, so trials take a moment.
FAULT = [
    "sweep.variants=[test-fault]",
    "sweep.backends=[torch-ref]",
    "sweep.phases=[prefill]",
    "sweep.params.test-fault.action=sleep",
    "measure.min_run_time_s=0.01",
    "executor=local",
    "progress=off",
    "report=false",
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def restore_http_settings():
    """The tracker sets MLflow's HTTP retry variables for its process; keep them out of other tests."""
    before = {name: os.environ.get(name) for name in CLIENT_ENV}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run_warned(args: list[str]) -> tuple[int, list[str]]:
    """main(args) and the messages of the warnings that name the catch-up command."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    return code, [str(w.message) for w in caught if "attnsweep sync" in str(w.message)]


def children(uri: str, sweep: str = "smoke") -> tuple[list, list]:
    """(parent runs, child runs) of experiment `sweep`, deleted runs left out."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(sweep)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_one_child_per_row(uri: str, frame) -> None:
    parents, kids = children(uri)
    assert [p.info.run_name for p in parents] == [frame["run_id"].iloc[0]]
    assert parents[0].data.tags["run_id"] == frame["run_id"].iloc[0]
    assert parents[0].info.status == "FINISHED"
    keys = sorted((k.data.tags["run_id"], k.data.tags["trial_id"], k.data.tags["attempt"]) for k in kids)
    rows = sorted(zip(frame["run_id"], frame["trial_id"], frame["attempt"].astype(str), strict=True))
    assert keys == rows
    for kid in kids:
        assert kid.info.status == "FINISHED" and kid.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {"latency_ms", "rel_err", "n_samples"} <= set(kid.data.metrics)
        assert kid.data.params["variant"] == "test-fault" and kid.data.tags["status"] == "ok"


# A sweep whose tracking server is not there at all ------------------------------------------------


@pytest.fixture(scope="module")
def offline_sweep(tmp_path_factory):
    """A sweep with tracking.uri at a closed port: (directory, exit code, its warnings)."""
    where = tmp_path_factory.mktemp("offline")
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name in CLIENT_ENV:  # the tracker's own settings, not the environment's
            patch.setenv(name, "")
            patch.delenv(name)
        code, warned = run_warned(["run", *FAULT, "sweep.axes.seq_len=[8,16,24]", f"tracking.uri={uri}"])
    return where, uri, code, warned


def test_dead_server_sweep_completes_with_one_warning(offline_sweep):
    where, uri, code, warned = offline_sweep
    assert code == 0
    frame = read_results(where / "results" / "smoke")
    assert len(frame) == 3 and set(frame["status"]) == {"ok"}
    assert len(warned) == 1, warned
    assert uri in warned[0]
    assert f"run `attnsweep sync results/smoke --tracking-uri {uri}` to log the missing trials" in warned[0]


def test_sync_logs_every_row_once(offline_sweep, capsys, monkeypatch):
    where, _, _, _ = offline_sweep
    monkeypatch.chdir(where)
    results = where / "results" / "smoke"
    frame = read_results(results)
    uri = f"sqlite:///{where / 'synced.db'}"

    assert main(["sync", str(results), "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == f"synced 3 rows to MLflow (0 already there) at {uri}\n"
    assert_one_child_per_row(uri, frame)

    assert main(["sync", str(results), "--tracking-uri", uri]) == 0  # idempotent
    assert capsys.readouterr().out == f"synced 0 rows to MLflow (3 already there) at {uri}\n"
    assert_one_child_per_row(uri, frame)


def test_sync_redoes_a_child_cut_short_and_closes_the_parent(offline_sweep, capsys, monkeypatch):
    """What an outage leaves: the parent still RUNNING, a child created (its identity tags set) but
    never filled nor closed. Sync replaces that child and closes the parent."""
    where, _, _, _ = offline_sweep
    monkeypatch.chdir(where)
    frame = read_results(where / "results" / "smoke")
    run_id, first = frame["run_id"].iloc[0], frame.iloc[0]
    uri = f"sqlite:///{where / 'cut-short.db'}"
    client = make_client(uri)
    experiment = experiment_id(client, "smoke")
    parent = client.create_run(experiment, run_name=run_id, tags={"sweep": "smoke", "run_id": run_id})
    identity = {"run_id": run_id, "trial_id": first["trial_id"], "attempt": str(first["attempt"])}
    half = client.create_run(experiment, tags={"mlflow.parentRunId": parent.info.run_id, **identity})

    assert main(["sync", "results/smoke", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == f"synced 3 rows to MLflow (0 already there) at {uri}\n"
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    assert_one_child_per_row(uri, frame)  # the parent included: the same one, now FINISHED
    assert children(uri)[0][0].info.run_id == parent.info.run_id


def test_sync_of_a_missing_path_is_a_usage_error(in_tmp, capsys):
    assert main(["sync", "results/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err == "attnsweep: error: RESULTS=results/nowhere: no results dataset there\n"
    assert not (in_tmp / "mlflow.db").exists()


def test_sync_to_an_unreachable_store_fails_in_one_line(offline_sweep, capsys):
    where, uri, _, _ = offline_sweep
    assert main(["sync", str(where / "results" / "smoke"), "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"attnsweep: error: tracking store {uri}: ") and "0 rows synced" in err


# A tracking server that dies mid-sweep -------------------------------------------------------------


class Server:
    """A real `mlflow server` on a SQLite store, in its own process group (uvicorn runs as a child)."""

    def __init__(self, store: Path, cwd: Path):
        self.store, self.cwd, self.port = store, cwd, closed_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        with (self.cwd / "server.log").open("a") as log:
            self.proc = subprocess.Popen(
                [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{self.store}"]
                + ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.cwd / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"mlflow server did not answer in {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server's process group (the one it was started in, by its id)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def finished_children(store: Path) -> int:
    """Child runs the server has closed, read from its SQLite file (read-only, beside the server)."""
    if not store.exists():
        return 0
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
        try:
            (count,) = db.execute(
                "SELECT count(*) FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "WHERE tags.key = 'mlflow.parentRunId' AND runs.status = 'FINISHED'"
            ).fetchone()
        except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
            return 0
    return count


def test_server_dies_mid_sweep_then_sync_completes_it(in_tmp, capsys):
    store = in_tmp / "server.db"
    server = Server(store, in_tmp)
    done = threading.Event()

    def kill_after_first_child() -> None:
        while not done.is_set() and finished_children(store) == 0:
            time.sleep(0.05)
        server.kill()

    try:
        server.start()
        watcher = threading.Thread(target=kill_after_first_child)
        watcher.start()
        try:
            code, warned = run_warned(
                [
                    "run",
                    *FAULT,
                    "sweep.axes.seq_len=[8,16,24,32,40,48]",
                    "sweep.params.test-fault.seconds=0.2",
                    f"tracking.uri={server.uri}",
                ]
            )
        finally:
            done.set()
            watcher.join()
        frame = read_results(in_tmp / "results" / "smoke")
        assert code == 0 and len(frame) == 6 and set(frame["status"]) == {"ok"}
        assert len(warned) == 1 and server.uri in warned[0], warned
        assert "MLflow tracking stopped after" in warned[0]
        logged_live = finished_children(store)
        assert 1 <= logged_live < 6  # the outage did cut the logging short

        server.start()  # the same store, back up
        capsys.readouterr()
        assert main(["sync", "results/smoke", "--tracking-uri", server.uri]) == 0
        out = capsys.readouterr().out
        assert out.startswith("synced ") and "(" in out
        synced, already = (int(word) for word in out.replace("(", " ").split() if word.isdigit())
        assert synced + already == 6 and already == logged_live
        assert_one_child_per_row(server.uri, frame)

        assert main(["sync", "results/smoke", "--tracking-uri", server.uri]) == 0
        assert capsys.readouterr().out == f"synced 0 rows to MLflow (6 already there) at {server.uri}\n"
        assert_one_child_per_row(server.uri, frame)
    finally:
        server.kill()
