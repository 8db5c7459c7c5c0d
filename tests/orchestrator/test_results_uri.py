"""results_dir as a URI, end to end: `file://` goes through pyarrow's filesystem layer (from_uri), the
way s3:// and gs:// do; unsupported or malformed URIs and unwritable locations are refused with one
line (exit 2) before anything runs; `submit` accepts an object store when reports have a local home."""

import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

# Hosts without mlflow (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")

import mlflow

from analysis.store import read_results
from orchestrator.cli import main
from orchestrator.config import ConfigError
from orchestrator.jobs import prepare

# 4 trials of the plain PyTorch reference at tiny shapes, in this process.
SWEEP = [
    "sweep.variants=[mha,gqa]",
    "sweep.backends=[torch-ref]",
    "sweep.phases=[prefill]",
    "sweep.axes.seq_len=[16,24]",
    "measure.min_run_time_s=0.02",
    "executor=local",
    "progress=off",
    "report=false",
]


def test_a_sweep_into_a_file_uri_writes_resumes_reports_and_syncs(in_tmp, capsys):
    results = (in_tmp / "store").as_uri()  # file:///.../store
    dataset = f"{results}/smoke"
    tracked = f"sqlite:///{in_tmp / 'tracked.db'}"
    assert main(["run", *SWEEP, f"results_dir={results}", f"tracking.uri={tracked}"]) == 0
    out = capsys.readouterr()
    assert f"results: {dataset}" in out.out, out.err
    frame = read_results(dataset)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"} and frame["trial_id"].is_unique
    assert len(pd.read_parquet(in_tmp / "store" / "smoke")) == 4  # the very directory the URI names
    assert (in_tmp / "store" / "smoke" / ".lock").exists()  # file:// is local: the run was locked
    assert not (in_tmp / "file:").exists()  # what a plain path would have made of the URI

    client = mlflow.MlflowClient(tracked)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"dataset"} and len(runs) == 1 + 4  # the dataset: the run's compacted file

    assert main(["run", *SWEEP, f"results_dir={results}", "tracking.enabled=false"]) == 0
    out = capsys.readouterr()
    assert "sweep smoke: nothing to run" in out.out and f"4 of 4 trials already done in {dataset}" in out.err
    assert len(read_results(dataset)) == 4

    assert main(["report", dataset]) == 0
    assert (in_tmp / "reports" / "smoke" / "index.html").exists()
    assert (in_tmp / "reports" / "smoke" / "summary.md").exists()

    assert main(["sync", dataset, "--tracking-uri", f"sqlite:///{in_tmp / 'synced.db'}"]) == 0
    assert "synced 4 rows to MLflow (0 already there)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "results_dir, reason",
    [
        ("ftp://host/results", "unsupported URI scheme 'ftp'"),
        ("abfs://container@account/results", "unsupported URI scheme 'abfs'"),
        ("s3://", "expected s3://BUCKET/PREFIX"),
        ("file://otherhost/results", "Unsupported hostname"),
    ],
    ids=["ftp", "azure", "s3-without-bucket", "file-with-host"],
)
def test_a_uri_the_store_cannot_use_exits_2_with_one_line(in_tmp, capsys, results_dir, reason):
    assert main(["run", *SWEEP, f"results_dir={results_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnsweep: error: results_dir={results_dir}: ") and reason in err
    assert err.count("\n") == 1 and list(in_tmp.iterdir()) == []


def test_an_unwritable_uri_location_exits_2_with_one_line(in_tmp, capsys):
    blocker = in_tmp / "occupied"
    blocker.write_text("a file where the results directory should go")
    results_dir = f"{blocker.as_uri()}/results"
    assert main(["run", *SWEEP, f"results_dir={results_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnsweep: error: results_dir={results_dir}: cannot write results there")
    assert err.count("\n") == 1 and sorted(p.name for p in in_tmp.iterdir()) == ["occupied"]


def test_an_object_store_that_cannot_be_written_exits_2_with_one_line(tmp_path):
    """pyarrow's own S3 client, at an endpoint where nothing listens (no network needed): the probe
    object cannot be written, so the run stops before any trial."""
    pytest.importorskip("pyarrow._s3fs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free a moment ago: nothing listens there
    results_dir = f"s3://bucket/results?region=us-east-1&endpoint_override=127.0.0.1:{port}&scheme=http"
    # Credentials of no account, and no instance-metadata lookup: nothing leaves this machine.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "none", "AWS_SECRET_ACCESS_KEY": "none"}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", *SWEEP, f"results_dir='{results_dir}'"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"results_dir={results_dir}: cannot write results there" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_report_and_sync_of_a_uri_that_is_no_dataset_exit_2(in_tmp, capsys):
    for command in ("report", "sync"):
        assert main([command, f"{in_tmp.as_uri()}/nothing"]) == 2
        assert main([command, "ftp://host/results/smoke"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and sum("unsupported URI scheme 'ftp'" in line for line in lines) == 2


def test_submit_takes_an_object_store_when_reports_have_a_local_home():
    """Checked here, before anything is sent: no job server is needed (nor S3: nothing is contacted)."""
    job = prepare([*SWEEP, "results_dir=s3://bucket/results", "reports_dir=/shared/reports"])
    assert "results_dir=s3://bucket/results" in job.entrypoint
    assert (
        "results_dir=s3://bucket/results" in prepare([*SWEEP, "results_dir=s3://bucket/results"]).entrypoint
    )
    with pytest.raises(ConfigError, match="reports are local files on the head node"):
        prepare([*SWEEP[:-1], "results_dir=s3://bucket/results"])  # report=true, reports_dir unsaid
    with pytest.raises(ConfigError, match="reports_dir=reports: give an absolute path"):
        prepare([*SWEEP[:-1], "results_dir=gs://bucket/results", "reports_dir=reports"])
    job = prepare([*SWEEP[:-1], "results_dir=file:///shared/results"])  # local: reports beside it
    assert "reports_dir=/shared/reports" in job.entrypoint
