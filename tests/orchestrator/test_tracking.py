"""MLflow layout against a real local store: experiment per sweep, parent per run, child per trial."""

import mlflow
import pytest
from mlflow import MlflowClient

from orchestrator.config import load_config
from orchestrator.sweep import run_sweep

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
    return outcome, uri


def test_parent_and_one_child_per_trial(sweep_run, monkeypatch):
    outcome, uri = sweep_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what a user does; set_tracking_uri would leak
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.mlflow_run_id]
    assert [p.info.run_id for p in parents] == [outcome.mlflow_run_id]
    assert len(children) == 4 == sum(outcome.counts.values())
    assert parents[0].info.status == "FINISHED" and parents[0].info.run_name == outcome.run_id
    assert parents[0].data.params["sweep.axes.seq_len"] == "[16]"


def test_child_contents(sweep_run):
    outcome, uri = sweep_run
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'"
    )
    trial_ids = set()
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert {"trial_id", "status", "variant", "backend", "device"} <= set(tags)
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
        trial_ids.add(tags["trial_id"])
    assert len(trial_ids) == 4


def test_parent_carries_the_dataset(sweep_run):
    outcome, uri = sweep_run
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
    with pytest.warns(UserWarning, match="MLflow tracking is off for this run"):
        outcome = run_sweep(load_config([*SMALL, f"tracking.uri=sqlite:///{in_tmp}/not-a-dir/x.db"]))
    assert outcome.mlflow_run_id is None and sum(outcome.counts.values()) == 4
