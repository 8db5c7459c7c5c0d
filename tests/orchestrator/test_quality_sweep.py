"""Trained phases end to end on Ray: quality and prune rows in the dataset, the same accuracies in a
second run, the training curve as MLflow step metrics, and the Quality section of the report."""

import pandas as pd
import pytest

# Hosts without mlflow (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.cli import main

TINY = [
    "sweep.name=quality_tiny",
    "sweep.variants=[mha,mqa]",
    "sweep.backends=[torch-ref,torch-sdpa]",
    "sweep.phases=[quality,prune,prefill]",
    "sweep.axes.batch=[32]",
    "sweep.axes.seq_len=[16]",
    "sweep.axes.n_heads=[2]",
    "sweep.axes.d_model=[16]",
    "sweep.quality.task_params.mqar.vocab_size=32",
    "sweep.quality.task_params.mqar.num_kv_pairs=4",
    "sweep.quality.seeds=[0,1]",
    "sweep.quality.steps=40",
    "sweep.quality.warmup_steps=5",
    "sweep.quality.n_train=256",
    "sweep.quality.n_eval=64",
    "measure.min_run_time_s=0.01",
    "progress=off",
]


def test_quality_sweep_end_to_end_and_repeatable(ray_cluster, in_tmp, capsys):
    uri = f"sqlite:///{in_tmp / 'tracking.db'}"
    assert main(["run", *TINY, f"tracking.uri={uri}"]) == 0, capsys.readouterr().err
    again = ["tracking.enabled=false", "report=false", "resume=false"]  # measure everything again
    assert main(["run", *TINY, *again]) == 0, capsys.readouterr().err
    frame = pd.read_parquet(in_tmp / "results" / "quality_tiny")
    assert set(frame["status"]) == {"ok"}, frame[["variant", "phase", "error"]]
    first, second = (frame[frame["run_id"] == run] for run in sorted(frame["run_id"].unique()))

    # 2 variants x 2 seeds trained; prune: every number of heads kept from 4 (2 layers x 2) to 2.
    quality = first[first["phase"] == "quality"]
    assert len(quality) == 4 and set(quality["task"]) == {"mqar"} and set(quality["seed"]) == {0, 1}
    assert quality["train_steps"].eq(40).all() and quality["model_params"].gt(quality["n_params"]).all()
    prune = first[first["phase"] == "prune"]
    assert sorted(prune.groupby(["variant", "seed"])["heads_kept"].apply(sorted)) == [[2, 3, 4]] * 4
    assert prune.loc[prune["heads_kept"] == 4, "removed_head"].isna().all()
    assert first["trial_id"].is_unique and len(first) == 4 + 12 + 2 * 2

    # Deterministic: the second run's accuracy of every trial is the first's, bit for bit.
    accuracy = [run.set_index("trial_id")["accuracy"].dropna().sort_index() for run in (first, second)]
    pd.testing.assert_series_equal(accuracy[0], accuracy[1])
    # A prune row's full model is the quality model of the same configuration and seed.
    full = prune[prune["removed_head"].isna()].set_index(["variant", "seed"])["accuracy"].sort_index()
    pd.testing.assert_series_equal(full, quality.set_index(["variant", "seed"])["accuracy"].sort_index())

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("quality_tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.phase = 'quality'")
    assert len(runs) == 4
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    trial = first.set_index("trial_id").loc[runs[0].data.tags["trial_id"]]
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (p["step"], p["loss"]) for p in trial["train_curve"]
    ]
    assert runs[0].data.metrics["accuracy"] == trial["accuracy"]
    assert runs[0].data.params["seed"] == str(int(trial["seed"]))

    report = (in_tmp / "reports" / "quality_tiny" / "summary.md").read_text()
    assert "## Quality" in report and "### Head pruning" in report and "Phase: quality" not in report
