"""The results store and its schema: docs/architecture.md §3 columns, atomic parts, compaction, whole reads —
at a plain path and at a file:// URI (pyarrow's filesystem, as for s3://), and on pyarrow's in-memory
filesystem, which the store writes as an object store (no rename)."""

import datetime as dt
import time

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

# Hosts without rich (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("rich")

from analysis.schema import COLUMNS, RESULT_SCHEMA
from analysis.store import (
    RENAMES_ATOMICALLY,
    ResultStore,
    dataset_exists,
    dataset_files,
    join,
    probe,
    read_results,
    repair,
    to_table,
    trial_history,
)
from orchestrator.sweep import make_records
from workloads.trial import Trial, TrialResult

REQUIRED = """sweep run_id trial_id variant backend phase batch seq_len n_heads n_kv_heads head_dim dtype
causal params status error latency_ms latency_ms_p20 latency_ms_p80 n_samples tflops gbps pct_peak
peak_mem_bytes kv_cache_bytes kv_bytes_per_token max_abs_err rel_err task accuracy loss device host
node interpreted code_version timestamp""".split()


def record(i: int, run_id: str = "run-a", status: str = "ok") -> dict:
    trial = Trial("gqa", "torch-sdpa", "prefill", 1, 64 + i, 4, 2, 32, "float32", True)
    result = TrialResult(
        status=status,
        latency_ms=1.0 + i,
        device="cpu",
        host="h",
        timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )
    return make_records({"sweep": "s", "run_id": run_id, "attempt": 1, "code_version": "abc"}, trial, result)[
        0
    ]


@pytest.fixture(params=["path", "file-uri"])
def where(request, tmp_path):
    """(results_dir as the store is given it, the same directory as a local Path to look into)."""
    return (tmp_path if request.param == "path" else tmp_path.as_uri()), tmp_path


def test_schema_has_the_required_columns():
    assert set(REQUIRED) <= set(COLUMNS)


def test_a_sweep_record_matches_the_schema_exactly():
    assert list(record(0)) and set(record(0)) == set(COLUMNS)
    table = to_table([record(0)])
    assert table.schema.equals(RESULT_SCHEMA, check_metadata=False)


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_rows_off_schema_are_refused(change):
    row = record(0)
    if change == "missing":
        del row["rel_err"]
    else:
        row["surprise"] = 1
    with pytest.raises(ValueError, match="does not match the schema"):
        to_table([row])


def test_appended_parts_are_readable_at_every_step_then_compacted(where):
    results_dir, local = where
    store = ResultStore(results_dir, "s", "run-a", flush_s=0)  # every append is a part
    assert store.path == join(results_dir, "s") and str(store.path).startswith(str(results_dir))
    for i in range(3):
        store.append([record(i)])
        assert len(pd.read_parquet(local / "s")) == i + 1  # readable while the run goes on
    (local / "s" / ".half-written.parquet.tmp").write_bytes(b"PAR1 not a whole file")
    final = store.finalize()
    assert final == join(results_dir, "s", "run-a.parquet")
    assert sorted(p.name for p in (local / "s").glob("*.parquet")) == ["run-a.parquet"]
    assert dataset_files(join(results_dir, "s")) == ["run-a.parquet"]  # the dot-prefixed file is not
    frame = pd.read_parquet(local / "s")
    assert list(frame["seq_len"]) == [64, 65, 66]
    assert ds.dataset(local / "s").count_rows() == 3
    assert list(read_results(join(results_dir, "s"))["seq_len"]) == [64, 65, 66]


def test_rows_appended_close_together_are_one_part_written_by_the_timer(where):
    results_dir, local = where
    store = ResultStore(results_dir, "s", "run-a", flush_s=0.5)
    for i in range(3):
        store.append([record(i)])
    deadline = time.monotonic() + 30
    while not list((local / "s").glob("run-a-part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)  # no further call: the timer writes them
    parts = list((local / "s").glob("run-a-part-*.parquet"))
    assert len(parts) == 1 and len(pd.read_parquet(parts[0])) == 3
    store.append([record(3)])
    assert store.flush() == join(results_dir, "s", "run-a-part-00001.parquet")
    assert store.flush() is None  # nothing queued the second time
    assert len(read_results(join(results_dir, "s"))) == 4


def test_a_failed_timed_write_is_raised_by_the_next_call_and_loses_nothing(where):
    results_dir, local = where
    (local / "s").write_text("a file where the dataset directory should be")
    store = ResultStore(results_dir, "s", "run-a", flush_s=0.05)
    store.append([record(0)])
    time.sleep(0.5)  # the timer tried and failed
    with pytest.raises(OSError):
        store.append([record(1)])
    (local / "s").unlink()
    store.finalize()  # the queued rows are still there
    assert sorted(pd.read_parquet(local / "s" / "run-a.parquet")["seq_len"]) == [64, 65]


def test_runs_accumulate_and_read_whole(where):
    results_dir, _ = where
    for run in ("run-a", "run-b"):
        store = ResultStore(results_dir, "s", run)
        store.append([record(0, run), record(1, run, status="error")])
        store.finalize()
    frame = read_results(join(results_dir, "s"))
    assert len(frame) == 4 and set(frame["run_id"]) == {"run-a", "run-b"}
    assert list(frame.columns) == list(COLUMNS)
    assert len(read_results(join(results_dir, "s"), run_id="run-b")) == 2
    history = trial_history(join(results_dir, "s"))
    assert len(history) == 2 and set(history["attempts"]) == {2}


def test_repair_removes_parts_of_compacted_runs(where):
    results_dir, local = where
    store = ResultStore(results_dir, "s", "run-a")
    store.append([record(0)])
    store.flush()
    part = next((local / "s").glob("run-a-part-*.parquet"))
    leftover = part.read_bytes()
    store.finalize()
    part.write_bytes(leftover)  # as if the driver died between the compacting rename and the deletes
    (local / "s" / "run-b-part-00000.parquet").write_bytes(leftover)  # a run not compacted: kept
    assert len(pd.read_parquet(local / "s")) == 3
    repair(join(results_dir, "s"))
    assert dataset_files(join(results_dir, "s")) == ["run-a.parquet", "run-b-part-00000.parquet"]


def test_a_dataset_is_found_where_it_is_and_only_there(where):
    results_dir, local = where
    assert not dataset_exists(join(results_dir, "s")) and len(trial_history(join(results_dir, "s"))) == 0
    ResultStore(results_dir, "s", "run-a", flush_s=0).append([record(0)])
    assert dataset_exists(join(results_dir, "s")) and list(local.iterdir()) == [local / "s"]


def test_reading_a_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results dataset"):
        read_results(tmp_path / "nothing")


def test_a_dataset_started_by_older_code_reads_with_every_column(tmp_path):
    """A run written before the trained phases (no quality/seed/... columns) next to a newer one with
    a training curve: read_results gives both with the current schema, and the report builds."""
    from analysis.report import build_report

    old_columns = [c for c in COLUMNS if c not in ("quality", "seed", "train_curve", "heads_kept")]
    old = to_table([record(0, run_id="run-old")]).select(old_columns)
    (tmp_path / "s").mkdir()
    pq.write_table(old, tmp_path / "s" / "run-old.parquet")
    new = record(1, run_id="run-new")
    new.update(
        phase="quality", backend="torch-ref", task="mqar", accuracy=0.5, seed=3, quality='{"task":"mqar"}'
    )
    new.update(latency_ms=None, train_curve=[{"step": 10, "loss": 2.5}, {"step": 20, "loss": 1.5}])
    store = ResultStore(tmp_path, "s", "run-new")
    store.append([new])
    store.finalize()
    frame = read_results(tmp_path / "s")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2
    by_run = frame.set_index("run_id")
    assert pd.isna(by_run.loc["run-old", "seed"]) and by_run.loc["run-new", "seed"] == 3
    assert [dict(p) for p in by_run.loc["run-new", "train_curve"]] == new["train_curve"]
    paths = build_report(tmp_path / "s", tmp_path / "report")
    assert "## Quality" in paths.markdown.read_text()


@pytest.mark.skipif(not hasattr(pafs, "_MockFileSystem"), reason="this pyarrow has no in-memory filesystem")
def test_the_store_on_a_filesystem_without_rename_writes_each_file_as_one_object():
    """pyarrow's in-memory filesystem (type "mock") is not one the store renames on: parts and the
    compacted file are written straight to their names, as on S3, and read, repaired and probed
    through the filesystem alone."""
    memory = pafs._MockFileSystem()
    assert memory.type_name not in RENAMES_ATOMICALLY
    store = ResultStore("results", "s", "run-a", flush_s=0, filesystem=memory)
    for i in range(2):
        store.append([record(i)])
        assert len(read_results("results/s", filesystem=memory)) == i + 1
    assert dataset_files("results/s", filesystem=memory) == [
        "run-a-part-00000.parquet",
        "run-a-part-00001.parquet",
    ]
    with memory.open_input_file("results/s/run-a-part-00000.parquet") as part:
        leftover = part.read()
    store.finalize()
    assert dataset_files("results/s", filesystem=memory) == ["run-a.parquet"]
    with memory.open_output_stream("results/s/run-a-part-00000.parquet") as out:
        out.write(leftover)  # a crash between the compacted write and the deletes
    repair("results/s", filesystem=memory)
    assert dataset_files("results/s", filesystem=memory) == ["run-a.parquet"]
    assert list(trial_history("results/s", filesystem=memory)["attempts"]) == [1, 1]
    assert not dataset_exists("results/other", filesystem=memory)

    probe("results/s", filesystem=memory)  # writes and deletes an object: nothing is left
    assert [i.base_name for i in memory.get_file_info(pafs.FileSelector("results/s"))] == ["run-a.parquet"]
    with pytest.raises(OSError):
        probe("results/s/run-a.parquet", filesystem=memory)  # a file where the location should be


def test_trial_history_keeps_the_latest_rows_impl_hash_and_none_for_rows_without(where):
    results_dir, _ = where
    store = ResultStore(results_dir, "s", "run-a")
    first, second, old = record(0), record(0), record(1)
    first["impl_hash"], second["impl_hash"], old["impl_hash"] = "aaaa", "bbbb", None
    second["timestamp"] = first["timestamp"] + dt.timedelta(seconds=1)  # the same trial, measured again
    store.append([first, second, old])
    store.finalize()
    history = trial_history(join(results_dir, "s"))
    assert history.loc[first["trial_id"], "impl_hash"] == "bbbb"
    assert history.loc[first["trial_id"], "attempts"] == 2
    assert history.loc[old["trial_id"], "impl_hash"] is None  # written before the column existed
