"""Fault injection through the real pipeline (Ray, Parquet): workers that die, hang or run out of
memory, failing trials that a rerun retries, resume, scheduling on logical GPUs. The misbehaving trials
are the test-only variant `test-fault` (tests/fault_variant.py), loaded into Ray's workers through
ATTNSWEEP_PLUGINS."""

import pandas as pd
import pytest

# Hosts without rich (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("rich")

from orchestrator.cli import main
from orchestrator.sweep import schedule
from tests.fault_variant import marker_file
from workloads.trial import Trial


def overrides(tmp, name, actions, *extra, seq_lens="16"):
    """A sweep of one test-fault trial per action (a list axis of the variant's params) and seq_len."""
    return [
        f"sweep.name={name}",
        "sweep.variants=[test-fault]",
        "sweep.backends=[torch-ref]",
        "sweep.phases=[prefill]",
        f"sweep.axes.seq_len=[{seq_lens}]",
        "sweep.axes.n_heads=[2]",
        "sweep.axes.head_dim=[8]",
        f"sweep.params.test-fault.action=[{','.join(actions)}]",
        f"sweep.params.test-fault.marker={tmp}",
        "measure.min_run_time_s=0.01",
        "tracking.enabled=false",
        "report=false",
        "progress=off",
        *extra,
    ]


def rows(tmp, name) -> pd.DataFrame:
    frame = pd.read_parquet(tmp / "results" / name)
    frame["action"] = frame["params"].map(lambda p: __import__("json").loads(p)["action"])
    return frame


def calls(tmp, action) -> list[str]:
    return marker_file(str(tmp), action, 16).read_text().splitlines()


def test_a_worker_killed_mid_trial_is_replaced_and_the_trial_run_again(ray_cluster, in_tmp):
    assert (
        main(["run", *overrides(in_tmp, "dies_once", ["ok", "exit"], "sweep.params.test-fault.times=1")]) == 0
    )
    frame = rows(in_tmp, "dies_once").set_index("action")
    assert set(frame["status"]) == {"ok"}, frame["error"]
    assert frame.loc["exit", "attempt"] == 2 and frame.loc["ok", "attempt"] == 1
    assert len(calls(in_tmp, "exit")) == 1  # died once, the second run passed


def test_a_trial_that_kills_every_worker_ends_as_error_after_max_attempts(ray_cluster, in_tmp):
    assert main(["run", *overrides(in_tmp, "dies_always", ["exit", "ok"], "ray.max_attempts=3")]) == 0
    frame = rows(in_tmp, "dies_always").set_index("action")
    assert frame.loc["ok", "status"] == "ok"
    assert frame.loc["exit", "status"] == "error" and frame.loc["exit", "attempt"] == 3
    assert "worker died while running the trial (3 runs)" in frame.loc["exit", "error"]
    assert len(calls(in_tmp, "exit")) == 3


def test_a_stuck_trial_times_out_and_the_sweep_goes_on(ray_cluster, in_tmp):
    sweep = overrides(
        in_tmp, "stuck", ["sleep", "ok"], "sweep.params.test-fault.seconds=600", "ray.trial_timeout_s=5"
    )
    assert main(["run", *sweep]) == 0
    frame = rows(in_tmp, "stuck").set_index("action")
    assert (
        frame.loc["sleep", "status"] == "timeout" and "ray.trial_timeout_s=5" in frame.loc["sleep", "error"]
    )
    assert frame.loc["ok", "status"] == "ok"


def test_out_of_memory_is_a_row_and_the_next_trials_run(ray_cluster, in_tmp):
    assert main(["run", *overrides(in_tmp, "oom", ["oom", "ok", "raise"])]) == 0
    frame = rows(in_tmp, "oom").set_index("action")
    assert frame["status"].to_dict() == {"oom": "oom", "ok": "ok", "raise": "error"}
    assert "injected fault" in frame.loc["raise", "error"]


def test_rerun_retries_only_failed_trials_then_runs_nothing(ray_cluster, in_tmp, capsys):
    sweep = overrides(in_tmp, "resume", ["ok", "raise"], "sweep.params.test-fault.times=1")
    assert main(["run", *sweep]) == 0
    first = rows(in_tmp, "resume").set_index("action")["status"].to_dict()
    assert first == {"ok": "ok", "raise": "error"}
    assert main(["run", *sweep]) == 0  # resume: the error is run again (and passes), ok is kept
    frame = rows(in_tmp, "resume")
    second = frame[frame["run_id"] == frame["run_id"].max()]
    assert second[["action", "status", "attempt"]].values.tolist() == [["raise", "ok", 2]]
    assert main(["run", *sweep]) == 0
    assert "nothing to run" in capsys.readouterr().out and len(rows(in_tmp, "resume")) == 3


def test_retry_failed_false_keeps_failures(ray_cluster, in_tmp, capsys):
    sweep = overrides(in_tmp, "keep", ["ok", "raise"])
    assert main(["run", *sweep]) == 0
    assert main(["run", *sweep, "retry_failed=false"]) == 0
    assert "nothing to run" in capsys.readouterr().out and len(rows(in_tmp, "keep")) == 2


def test_each_logical_gpu_runs_its_own_trial_at_the_same_time(ray_cluster, in_tmp):
    """2 logical GPUs (the session cluster): 2 actors, each with its own CUDA_VISIBLE_DEVICES, both
    inside their first call at once (each sleeps 3 s in it and logs when it started)."""
    sweep = overrides(in_tmp, "gpus", ["sleep"], "sweep.params.test-fault.seconds=3", seq_lens="16,17")
    assert main(["run", *sweep, "sweep.params.test-fault.times=1"]) == 0
    frame = rows(in_tmp, "gpus")
    assert set(frame["status"]) == {"ok"} and sorted(frame["gpu"]) == ["0", "1"]
    starts = [float(marker_file(str(in_tmp), "sleep", n).read_text().split("t=")[1]) for n in (16, 17)]
    assert abs(starts[0] - starts[1]) < 3, "the second trial waited for the first"


def test_schedule_puts_the_longest_trials_first():
    def trial(seq_len, phase="prefill"):
        return Trial("mha", "torch-sdpa", phase, 1, seq_len, 8, 8, 64, "float16", True)

    short, long, decode = trial(128), trial(8192), trial(8192, "decode")
    assert schedule([short, decode, long]) == [long, decode, short]
