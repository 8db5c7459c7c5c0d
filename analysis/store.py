"""The Parquet results store: `<results_dir>/<sweep>/`, one dataset per sweep, appended as results arrive.

Rows appended within `flush_s` of each other (default 1 s) become one part file
`<run_id>-part-<n>.parquet`: a timer writes them at the latest `flush_s` after the first of them, so
a fast sweep does not write (and later read back) a file per trial, and a killed driver loses at
most the last second of rows, which a rerun measures again (resume). Each part is written to a
dot-prefixed temporary name and renamed, so a killed driver leaves only whole files (readers skip
dot- and underscore-prefixed names). When a run ends its parts are compacted into
`<run_id>.parquet`; that rename is the commit point, after which the run's parts are deleted —
`repair` finishes that deletion if a crash interrupted it.
"""

import fcntl
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analysis.schema import COLUMNS, RESULT_SCHEMA


def to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of RESULT_SCHEMA; a missing or extra column is a bug, so it raises."""
    rows = list(records)
    for row in rows:
        if set(row) != set(COLUMNS):
            missing, extra = sorted(set(COLUMNS) - set(row)), sorted(set(row) - set(COLUMNS))
            raise ValueError(f"result row does not match the schema: missing {missing}, extra {extra}")
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _write_atomically(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ResultStore:
    """Appends one run's rows to a sweep's dataset directory."""

    def __init__(self, results_dir: str | os.PathLike, sweep: str, run_id: str, flush_s: float = 1.0):
        self.path = Path(results_dir) / sweep
        self.run_id = run_id
        self.flush_s = flush_s
        self._parts: list[Path] = []
        self._pending: list[pa.Table] = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # the timer's flush against append and finalize
        self._error: Exception | None = None  # a failed timed flush, raised by the next call

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Queue rows (checked against the schema now); they are on disk within flush_s."""
        table = to_table(records)
        if table.num_rows:
            with self._lock:
                self._pending.append(table)
                if self.flush_s <= 0:
                    self._write_pending()
                elif self._timer is None:
                    self._timer = threading.Timer(self.flush_s, self._timed_flush)
                    self._timer.daemon = True
                    self._timer.start()
        self._raise_pending_error()  # after queueing: the rows stay for finalize to write

    def flush(self) -> Path | None:
        """Write the queued rows now as one part; its path (None when nothing was queued)."""
        with self._lock:
            part = self._write_pending()
        self._raise_pending_error()
        return part

    def _timed_flush(self) -> None:
        try:
            with self._lock:
                self._write_pending()
        except Exception as exc:  # raised to the sweep by its next append, flush or finalize
            self._error = exc

    def _write_pending(self) -> Path | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        part = self.path / f"{self.run_id}-part-{len(self._parts):05d}.parquet"
        _write_atomically(pa.concat_tables(self._pending), part)
        self._pending = []
        self._parts.append(part)
        return part

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def finalize(self) -> Path | None:
        """Write what is queued, then compact this run's parts into one file (fewer, larger files
        read faster)."""
        self.flush()
        if not self._parts:
            return None
        table = pa.concat_tables(pq.read_table(p, schema=RESULT_SCHEMA) for p in self._parts)
        final = self.path / f"{self.run_id}.parquet"
        _write_atomically(table, final)
        repair(self.path)
        self._parts = []
        return final


def repair(path: str | os.PathLike) -> None:
    """Delete the parts of runs whose compacted file exists (a crash between rename and delete)."""
    root = Path(path)
    for final in root.glob("*.parquet"):
        if "-part-" not in final.name:
            for part in root.glob(f"{final.stem}-part-*.parquet"):
                part.unlink(missing_ok=True)


class StoreBusy(RuntimeError):
    """Another process is writing this sweep's dataset."""


class StoreLock:
    """An exclusive lock on a sweep's dataset directory (`.lock`, flock'ed), held while a run writes.

    The kernel releases it when the holder exits, however it exits (SIGKILL included), so a stale
    lock never blocks a rerun. Local and most shared filesystems honour flock."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path) / ".lock"
        self._file = None

    def __enter__(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreBusy(
                f"{self.path.parent}: another attnsweep run is writing this sweep's results ({holder}); "
                "wait for it to finish, or give this run another results_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def trial_history(path: str | os.PathLike) -> pd.DataFrame:
    """Per trial_id already in the dataset: its latest status (by timestamp) and how many rows
    (attempts) it has. Empty when there is no dataset yet."""
    root = Path(path)
    if not root.is_dir() or not any(root.glob("*.parquet")):
        return pd.DataFrame(columns=["status", "attempts"], index=pd.Index([], name="trial_id"))
    rows = ds.dataset(root, format="parquet", schema=RESULT_SCHEMA).to_table(
        columns=["trial_id", "status", "timestamp"]
    )
    frame = rows.to_pandas().sort_values("timestamp", kind="stable")
    grouped = frame.groupby("trial_id", sort=False)
    return pd.DataFrame({"status": grouped["status"].last(), "attempts": grouped.size()})


def read_table(path: str | os.PathLike, run_id: str | None = None) -> pa.Table:
    """A sweep's dataset (or one run of it) with every schema column (older files: nulls)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no results dataset at {root}")
    dataset = ds.dataset(root, format="parquet", schema=RESULT_SCHEMA)
    return dataset.to_table(filter=None if run_id is None else ds.field("run_id") == run_id)


def read_results(path: str | os.PathLike, run_id: str | None = None) -> pd.DataFrame:
    """The whole dataset of one sweep (or one run of it) as a DataFrame."""
    return read_table(path, run_id).to_pandas()
