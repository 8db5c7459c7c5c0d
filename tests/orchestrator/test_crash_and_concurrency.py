"""A driver killed mid-sweep loses nothing a rerun cannot finish; sweeps running at once into one
results store stay apart, and a second run of the same sweep is refused while the first writes."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# Hosts without rich (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("rich")

from orchestrator.cli import main
from tests.orchestrator.test_faults import overrides


def start(tmp, args) -> subprocess.Popen:
    """`attnsweep run` in its own process group (so SIGKILL takes it and whatever it started)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def slow_sweep(tmp, name, n_trials, seconds):
    seq_lens = ",".join(str(16 + i) for i in range(n_trials))
    return overrides(
        tmp,
        name,
        ["sleep"],
        f"sweep.params.test-fault.seconds={seconds}",
        "sweep.params.test-fault.times=1",
        "executor=local",
        seq_lens=seq_lens,
    )


def test_rerun_after_the_driver_is_killed_has_every_trial_exactly_once(in_tmp):
    sweep = slow_sweep(in_tmp, "crash", 6, 1.0)
    driver = start(in_tmp, sweep)
    try:
        wait_for(lambda: len(list((in_tmp / "results" / "crash").glob("*-part-*.parquet"))) >= 2, "2 results")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    killed = pd.read_parquet(in_tmp / "results" / "crash")  # whatever was written reads whole
    assert 2 <= len(killed) < 6 and set(killed["status"]) == {"ok"}
    assert main(["run", *sweep]) == 0
    frame = pd.read_parquet(in_tmp / "results" / "crash")
    assert len(frame) == 6 and frame["trial_id"].is_unique and set(frame["status"]) == {"ok"}
    assert sorted(frame["seq_len"]) == list(range(16, 22)) and frame["run_id"].nunique() == 2


def test_a_second_run_of_a_sweep_that_is_running_is_refused(in_tmp, capsys):
    sweep = slow_sweep(in_tmp, "busy", 4, 1.5)
    first = start(in_tmp, sweep)
    lock = in_tmp / "results" / "busy" / ".lock"
    try:
        wait_for(lambda: lock.exists() and lock.read_text().startswith("pid"), "the first run's lock")
        assert main(["run", *sweep]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another attnsweep run is writing this sweep's results" in err
        assert f"pid {first.pid}" in err
    finally:
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    frame = pd.read_parquet(in_tmp / "results" / "busy")
    assert len(frame) == 4 and frame["run_id"].nunique() == 1 and set(frame["status"]) == {"ok"}


def test_two_sweeps_write_into_one_results_store_at_once(in_tmp):
    runs = [start(in_tmp, slow_sweep(in_tmp, name, 3, 0.5)) for name in ("left", "right")]
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
    for name in ("left", "right"):
        frame = pd.read_parquet(in_tmp / "results" / name)
        assert len(frame) == 3 and set(frame["sweep"]) == {name} and set(frame["status"]) == {"ok"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_run_stopped_by_a_signal_keeps_its_rows_compacted(in_tmp, signum):
    """kill / timeout / scancel (SIGTERM) and Ctrl-C (SIGINT) end a run the same way: the rows it
    measured are written and compacted into the run's one file, and it exits 130 with one line."""
    sweep = slow_sweep(in_tmp, "stopped", 6, 1.0)
    driver = start(in_tmp, sweep)
    dataset = in_tmp / "results" / "stopped"
    try:
        wait_for(lambda: len(list(dataset.glob("*-part-*.parquet"))) >= 2, "2 results")
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    assert "interrupted; results written so far are kept" in err.strip().splitlines()[-1]
    assert not list(dataset.glob("*-part-*.parquet"))  # compacted: one file for the run
    frame = pd.read_parquet(dataset)
    assert 2 <= len(frame) < 6 and set(frame["status"]) == {"ok"} and frame["run_id"].nunique() == 1
