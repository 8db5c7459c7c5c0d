"""`attnsweep run` end to end on Ray: Parquet dataset, MLflow runs, report (the demo's acceptance)."""

import pandas as pd
import pytest

# Hosts without mlflow (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")

import mlflow

from orchestrator.cli import main


def test_run_smoke_end_to_end(ray_cluster, in_tmp, capsys, monkeypatch):
    code = main(["run", "sweep.axes.seq_len=[40]", "measure.min_run_time_s=0.02", "progress=lines"])
    out = capsys.readouterr()
    assert code == 0, out.err

    frame = pd.read_parquet(in_tmp / "results" / "smoke")
    assert len(frame) == 18 and set(frame["status"]) == {"ok"}, frame[
        ["variant", "backend", "phase", "error"]
    ]
    combos = frame.groupby(["variant", "backend", "phase"]).size()
    assert len(combos) == 3 * 3 * 2
    assert frame.loc[frame["backend"] == "triton", "interpreted"].all()
    assert (frame["rel_err"] < 1e-5).all()
    assert frame["node"].str.len().gt(0).all() and frame["trial_id"].is_unique
    assert frame["run_id"].nunique() == 1 and frame["code_version"].iloc[0]

    report = in_tmp / "reports" / "smoke" / "index.html"
    assert report.exists() and (in_tmp / "reports" / "smoke" / "summary.md").exists()
    assert "<svg" in report.read_text()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.run_name == frame["run_id"].iloc[0]
    assert len(runs) == 1 + 18
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent[0].info.run_id)}
    assert artifacts == {"dataset", "report"}
    assert f"sweep smoke run {frame['run_id'].iloc[0]}: 18 ok" in out.out
    assert out.err.count("[18/18]") == 1


def test_second_run_resumes_and_resume_false_measures_again(ray_cluster, in_tmp, capsys):
    overrides = [
        "sweep.variants=[mqa]",
        "sweep.backends=[torch-sdpa]",
        "sweep.phases=[decode]",
        "sweep.axes.seq_len=[40]",
        "measure.min_run_time_s=0.02",
        "tracking.enabled=false",
        "report=false",
    ]
    assert main(["run", *overrides]) == 0
    assert main(["run", *overrides]) == 0  # everything is done: nothing runs
    out = capsys.readouterr()
    assert "sweep smoke: nothing to run" in out.out and "1 of 1 trials already done" in out.err
    assert len(pd.read_parquet(in_tmp / "results" / "smoke")) == 1
    assert main(["run", *overrides, "resume=false"]) == 0
    frame = pd.read_parquet(in_tmp / "results" / "smoke")
    assert frame["run_id"].nunique() == 2 and frame["trial_id"].nunique() == 1
    assert sorted(frame["attempt"]) == [1, 1]  # resume=false starts the count again
    assert not (in_tmp / "reports").exists()


def test_the_runs_report_measures_speedups_against_report_baseline(in_tmp, capsys):
    overrides = [
        "sweep.variants=[mha,mqa]",
        "sweep.backends=[torch-sdpa]",
        "sweep.phases=[decode]",
        "sweep.axes.seq_len=[40]",
        "measure.min_run_time_s=0.01",
        "executor=local",
        "tracking.enabled=false",
        "report_baseline=mqa/torch-sdpa",
    ]
    assert main(["run", *overrides]) == 0, capsys.readouterr().err
    summary = (in_tmp / "reports" / "smoke" / "summary.md").read_text()
    assert "against mqa on torch-sdpa" in summary and "against mha on torch-sdpa" not in summary
