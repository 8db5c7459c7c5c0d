"""MLflow layout against a real local store: experiment per sweep, parent per run, child per trial."""

import datetime as dt

import pytest

# Hosts without mlflow or rich (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")
pytest.importorskip("rich")

import mlflow
from mlflow import MlflowClient

from analysis.store import read_table
from orchestrator.config import load_config
from orchestrator.sweep import run_sweep
from orchestrator.sync import sync
from orchestrator.tracking import MLFLOW_RUN_STATUS, experiment_id, log_child, make_client

SMALL = [
    "sweep.variants=[mha,gqa]",
    "sweep.backends=[torch-sdpa]",
    "sweep.phases=[prefill,decode]",
    "sweep.axes.seq_len=[16]",
    "measure.min_run_time_s=0.01",
    "executor=local",
    "progress=off",
    "report=false",
]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """One tracked sweep shared by the layout tests (a fresh MLflow store takes seconds to create)."""
    where = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{where / 'tracking.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        outcome = run_sweep(load_config([*SMALL, f"tracking.uri={uri}"]))
    return outcome, uri, where / "results" / "smoke"


def runs_of(uri: str, filter_string: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name("smoke").experiment_id], filter_string)


def test_parent_and_one_child_per_trial(sweep_run, monkeypatch):
    outcome, uri, _ = sweep_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what a user does; set_tracking_uri would leak
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.mlflow_run_id]
    assert [p.info.run_id for p in parents] == [outcome.mlflow_run_id]
    assert len(children) == 4 == sum(outcome.counts.values())
    assert parents[0].info.status == "FINISHED" and parents[0].info.run_name == outcome.run_id
    assert parents[0].data.params["sweep.axes.seq_len"] == "[16]"
    assert parents[0].data.tags["run_id"] == outcome.run_id and parents[0].data.tags["sweep"] == "smoke"


def test_child_contents(sweep_run):
    outcome, uri, _ = sweep_run
    trial_ids = set()
    for child in runs_of(uri, f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'"):
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert {"trial_id", "status", "variant", "backend", "device"} <= set(tags)
        assert tags["run_id"] == outcome.run_id and tags["attempt"] == "1"  # the row's identity
        assert tags["status"] == "ok" and child.info.status == "FINISHED"
        assert {"variant", "backend", "phase", "seq_len", "n_heads", "n_kv_heads", "dtype", "params"} <= set(
            params
        )
        assert {
            "latency_ms",
            "latency_ms_p20",
            "latency_ms_p80",
            "tflops",
            "gbps",
            "rel_err",
            "kv_bytes_per_token",
        } <= set(metrics)
        assert "seq_len" not in metrics  # configuration is a param, not a metric
        assert "aten::scaled_dot_product_attention" in tags["kernels"]  # what ran, named (CPU: aten ops)
        trial_ids.add(tags["trial_id"])
    assert len(trial_ids) == 4


def test_parent_carries_the_dataset(sweep_run):
    outcome, uri, _ = sweep_run
    artifacts = [
        a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(outcome.mlflow_run_id, "dataset")
    ]
    assert artifacts == [f"dataset/{outcome.run_id}.parquet"]


def test_tracking_disabled_writes_no_store(in_tmp):
    run_sweep(load_config([*SMALL, "tracking.enabled=false"]))
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / "mlruns").exists()
    assert (in_tmp / "results" / "smoke").is_dir()


def test_default_uri_is_mlflows_own(in_tmp):
    outcome = run_sweep(load_config(SMALL))
    assert (in_tmp / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlflow.db'}")
    assert client.get_run(outcome.mlflow_run_id).info.status == "FINISHED"


def test_unusable_tracking_store_warns_and_keeps_results(in_tmp):
    (in_tmp / "not-a-dir").write_text("a file where a directory is needed")
    uri = f"sqlite:///{in_tmp}/not-a-dir/x.db"
    with pytest.warns(UserWarning, match="MLflow tracking is off for this run") as warned:
        outcome = run_sweep(load_config([*SMALL, f"tracking.uri={uri}"]))
    assert outcome.mlflow_run_id is None and sum(outcome.counts.values()) == 4
    [message] = [str(w.message) for w in warned if "attnsweep sync" in str(w.message)]
    assert f"run `attnsweep sync results/smoke --tracking-uri {uri}` to log the missing trials" in message


def test_sync_logs_the_children_a_live_sweep_logs(sweep_run, tmp_path):
    """The dataset synced into an empty store gives the children the live sweep logged, field by field."""
    outcome, uri, results = sweep_run
    other = f"sqlite:///{tmp_path / 'synced.db'}"
    done = sync(results, other)
    assert (done.synced, done.already) == (4, 0)
    [parent] = runs_of(other, "tags.sweep = 'smoke'")
    assert parent.info.run_name == outcome.run_id and parent.info.status == "FINISHED"

    def contents(run):
        tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
        info = (run.info.run_name, run.info.status, run.info.start_time, run.info.end_time)
        return tags["trial_id"], (info, run.data.params, run.data.metrics, tags)

    live = dict(contents(r) for r in runs_of(uri, f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'"))
    synced = dict(contents(r) for r in runs_of(other, f"tags.mlflow.parentRunId = '{parent.info.run_id}'"))
    assert synced == live and len(live) == 4


def test_a_long_training_curve_is_logged_in_several_batches(sweep_run, tmp_path):
    """MLflow takes at most 1000 entities per log_batch; a curve of 2500 points still arrives whole."""
    _, _, results = sweep_run
    record = read_table(results).to_pylist()[0]
    record["train_curve"] = [{"step": step, "loss": 1.0 / step} for step in range(1, 2501)]
    record["timestamp"] = dt.datetime.now(dt.timezone.utc)
    client = make_client(f"sqlite:///{tmp_path / 'curve.db'}")
    child = log_child(client, experiment_id(client, "smoke"), "no-parent", record)
    history = client.get_metric_history(child, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 2501))
    assert client.get_run(child).info.status == "FINISHED"


def test_a_sqlite_store_is_written_ahead_and_committed_without_fsync(sweep_run):
    """The store a sweep logs to is in WAL mode (persistent, read by any SQLite reader), and MLflow's
    connections to it in this process commit with synchronous=NORMAL (1), not the default FULL (2)."""
    import sqlite3

    from sqlalchemy import create_engine

    _, uri, _ = sweep_run
    path = uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("PRAGMA synchronous").fetchone()[0] == 2  # another file's or tool's: as is
    with create_engine(uri).connect() as connection:  # a new connection of this process to the store
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def test_a_child_run_ends_finished_only_when_its_trial_ran_as_planned():
    assert MLFLOW_RUN_STATUS == {
        "ok": "FINISHED",
        "oom": "FAILED",
        "error": "FAILED",
        "timeout": "FAILED",
        "unsupported": "FINISHED",
    }
