"""The Parquet results store: `<results_dir>/<sweep>/`, one dataset per sweep, appended as results arrive.

`results_dir` is a local path (relative or absolute, a shared filesystem included) or a URI that
`pyarrow.fs.FileSystem.from_uri` resolves: `file:///abs/path`, `s3://bucket/prefix`,
`gs://bucket/prefix` (credentials from the environment, as pyarrow reads them). Everything here goes
through that filesystem; paths handed back are Paths for local paths and URI strings for URIs.

Rows appended within `flush_s` of each other (default 1 s) become one part file
`<run_id>-part-<n>.parquet`: a timer writes them at the latest `flush_s` after the first of them, so
a fast sweep does not write (and later read back) a file per trial, and a killed driver loses at
most the last second of rows, which a rerun measures again (resume). Readers never see a part half
written: each file is serialized in memory first, then on a local filesystem written to a
dot-prefixed temporary name and renamed, and on an object store (no rename there) written as one
object, which appears whole when its upload completes or not at all. Readers skip dot- and
underscore-prefixed names. When a run ends its parts are compacted into `<run_id>.parquet`; that
file's rename (its upload) is the commit point, after which the run's parts are deleted — `repair`
finishes that deletion if a crash interrupted it.
"""

import fcntl
import importlib.util
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.schema import COLUMNS, RESULT_SCHEMA

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# The URI schemes results may live at, and the pyarrow module each needs (pyarrow can be built
# without S3 or GCS). Left out on purpose: abfs (pyarrow's Azure writer creates an empty blob before
# the data: a reader could see an empty file), hdfs, and pyarrow's test-only mock://.
SCHEMES = {"file": None, "s3": "pyarrow._s3fs", "gs": "pyarrow._gcsfs", "gcs": "pyarrow._gcsfs"}
# Filesystems with an atomic rename: parts are written under a temporary name, then renamed. Object
# stores have none (pyarrow's `move` there copies, then deletes).
RENAMES_ATOMICALLY = ("local",)
PathOrUri = str | os.PathLike


def is_uri(path: PathOrUri) -> bool:
    """A `scheme://` string; anything else (a relative path included) is a local path."""
    return isinstance(path, str) and URI.match(path) is not None


def check_uri(uri: str) -> None:
    """ValueError unless `uri` names a place results can live: a scheme of SCHEMES that this pyarrow
    supports, in a form it parses. Contacts nothing (pyarrow's from_uri asks an s3:// bucket for its
    region, so it is left to the first write)."""
    scheme = uri.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported URI scheme {scheme!r} (supported: {', '.join(SCHEMES)})")
    if SCHEMES[scheme] and importlib.util.find_spec(SCHEMES[scheme]) is None:
        raise ValueError(f"this pyarrow was built without {scheme}:// support")
    if scheme == "file":
        pafs.FileSystem.from_uri(uri)  # local: parsing it touches nothing (ArrowInvalid is a ValueError)
    elif not urlsplit(uri).netloc or any(c.isspace() for c in uri):
        raise ValueError(f"expected {scheme}://BUCKET/PREFIX")


def _resolve(path: PathOrUri, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it): `filesystem` when given, a URI's, else the local one."""
    if filesystem is not None:
        return filesystem, str(path)
    if is_uri(path):
        check_uri(path)
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def local_path(path: PathOrUri) -> Path | None:
    """The local path of a plain path or a file:// URI; None for an object store."""
    if not is_uri(path):
        return Path(path)
    if not path.startswith("file://"):
        return None
    return Path(pafs.FileSystem.from_uri(path)[1])


def join(path: PathOrUri, *names: str) -> PathOrUri:
    """`path/names...`: a Path for a local path, a URI for a URI (its query, e.g. ?region=, kept)."""
    if not is_uri(path):
        return Path(path).joinpath(*names)
    parts = urlsplit(path)
    return urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *names])))


def dataset_name(path: PathOrUri) -> str:
    """The last component of a dataset's path or URI: its sweep's name."""
    return PurePosixPath(urlsplit(path).path).name if is_uri(path) else Path(path).name


def to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of RESULT_SCHEMA; a missing or extra column is a bug, so it raises."""
    rows = list(records)
    for row in rows:
        if set(row) != set(COLUMNS):
            missing, extra = sorted(set(COLUMNS) - set(row)), sorted(set(row) - set(COLUMNS))
            raise ValueError(f"result row does not match the schema: missing {missing}, extra {extra}")
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _put(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Write `data` as the file `path` in one write. Not in a `with` block: pyarrow's S3 and GCS
    streams complete the upload when closed (also from their destructor), so a stream is only ever
    closed after the whole file went into it."""
    out = fs.open_output_stream(path)
    out.write(data)
    out.close()


def _write_whole(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write `table` as the Parquet file `path` so that readers see all of it or nothing."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)  # serialized first: a failure here opens nothing
    data = sink.getvalue()
    if fs.type_name not in RENAMES_ATOMICALLY:
        _put(fs, path, data)  # one object, visible once its upload completes
        return
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    _put(fs, tmp, data)
    fs.move(tmp, path)


def _files(fs: pafs.FileSystem, root: str) -> list[str]:
    """Names of the files readers see in `root` (not dot- or underscore-prefixed); [] without root."""
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(
        i.base_name for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
    )


def _is_dir(fs: pafs.FileSystem, root: str) -> bool:
    return fs.get_file_info(root).type == pafs.FileType.Directory


class ResultStore:
    """Appends one run's rows to a sweep's dataset directory."""

    def __init__(
        self,
        results_dir: PathOrUri,
        sweep: str,
        run_id: str,
        flush_s: float = 1.0,
        *,
        filesystem: pafs.FileSystem | None = None,
    ):
        self.path = join(results_dir, sweep)
        self.run_id = run_id
        self.flush_s = flush_s
        self._fs, self._root = _resolve(self.path, filesystem)
        self._dir_made = False
        self._parts: list[str] = []  # paths inside self._fs
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

    def flush(self) -> PathOrUri | None:
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

    def _write_pending(self) -> PathOrUri | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return None
        if not self._dir_made:  # once per run: on an object store each call is a request
            self._fs.create_dir(self._root, recursive=True)
            self._dir_made = True
        name = f"{self.run_id}-part-{len(self._parts):05d}.parquet"
        _write_whole(self._fs, f"{self._root}/{name}", pa.concat_tables(self._pending))
        self._pending = []
        self._parts.append(f"{self._root}/{name}")
        return join(self.path, name)

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def finalize(self) -> PathOrUri | None:
        """Write what is queued, then compact this run's parts into one file (fewer, larger files
        read faster)."""
        self.flush()
        if not self._parts:
            return None
        table = pa.concat_tables(
            pq.read_table(p, filesystem=self._fs, schema=RESULT_SCHEMA) for p in self._parts
        )
        name = f"{self.run_id}.parquet"
        _write_whole(self._fs, f"{self._root}/{name}", table)
        _repair(self._fs, self._root)
        self._parts = []
        return join(self.path, name)


def repair(path: PathOrUri, *, filesystem: pafs.FileSystem | None = None) -> None:
    """Delete the parts of runs whose compacted file exists (a crash between its write and the deletes)."""
    _repair(*_resolve(path, filesystem))


def _repair(fs: pafs.FileSystem, root: str) -> None:
    names = _files(fs, root)
    compacted = {n.removesuffix(".parquet") for n in names if n.endswith(".parquet") and "-part-" not in n}
    for name in names:
        run, part, _ = name.rpartition("-part-")
        if part and name.endswith(".parquet") and run in compacted:
            try:
                fs.delete_file(f"{root}/{name}")
            except FileNotFoundError:  # deleted meanwhile by another repair
                pass


def probe(path: PathOrUri, *, filesystem: pafs.FileSystem | None = None) -> None:
    """Write, then delete, a small object in `path` (which need not exist on an object store):
    raises (OSError, or pyarrow's ValueError) when results cannot be written there."""
    fs, root = _resolve(path, filesystem)
    name = f"{root.rstrip('/')}/.attnsweep-probe-{uuid.uuid4().hex[:8]}"
    _put(fs, name, b"attnsweep: can results be written here?")
    fs.delete_file(name)


class StoreBusy(RuntimeError):
    """Another process is writing this sweep's dataset."""


class StoreLock:
    """An exclusive lock on a sweep's dataset directory (`.lock`, flock'ed), held while a run writes.

    The kernel releases it when the holder exits, however it exits (SIGKILL included), so a stale
    lock never blocks a rerun. Local and most shared filesystems honour flock (file:// URIs too).
    Object stores cannot be flock'ed, and pyarrow offers no conditional ("only if absent") write to
    build a lock from: there the lock does nothing, and two runs of one sweep are not kept apart."""

    def __init__(self, path: PathOrUri):
        local = local_path(path)
        self.path = None if local is None else local / ".lock"
        self._file = None

    def __enter__(self) -> "StoreLock":
        if self.path is None:
            return self
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


def dataset_exists(path: PathOrUri, *, filesystem: pafs.FileSystem | None = None) -> bool:
    """Whether `path` is a directory (on an object store: a prefix holding objects). ValueError for
    a URI that is not supported, OSError when its store cannot be reached."""
    return _is_dir(*_resolve(path, filesystem))


def dataset_files(path: PathOrUri, *, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Names of the files of a dataset that readers see (parts and compacted runs), sorted."""
    return _files(*_resolve(path, filesystem))


def trial_history(path: PathOrUri, *, filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Per trial_id already in the dataset: its latest row's status and impl_hash (by timestamp; None
    for rows written before the column existed) and how many rows (attempts) it has. Empty when there
    is no dataset yet."""
    fs, root = _resolve(path, filesystem)
    if not _is_dir(fs, root) or not any(n.endswith(".parquet") for n in _files(fs, root)):
        return pd.DataFrame(columns=["status", "impl_hash", "attempts"], index=pd.Index([], name="trial_id"))
    rows = ds.dataset(root, filesystem=fs, format="parquet", schema=RESULT_SCHEMA).to_table(
        columns=["trial_id", "status", "impl_hash", "timestamp"]
    )
    frame = rows.to_pandas().sort_values("timestamp", kind="stable")
    frame["impl_hash"] = frame["impl_hash"].astype(object).where(frame["impl_hash"].notna(), None)
    latest = frame.groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    attempts = frame.groupby("trial_id", sort=False).size()
    return pd.DataFrame({"status": latest["status"], "impl_hash": latest["impl_hash"], "attempts": attempts})


def read_table(
    path: PathOrUri, run_id: str | None = None, *, filesystem: pafs.FileSystem | None = None
) -> pa.Table:
    """A sweep's dataset (or one run of it) with every schema column (older files: nulls)."""
    fs, root = _resolve(path, filesystem)
    if not _is_dir(fs, root):
        raise FileNotFoundError(f"no results dataset at {path}")
    dataset = ds.dataset(root, filesystem=fs, format="parquet", schema=RESULT_SCHEMA)
    return dataset.to_table(filter=None if run_id is None else ds.field("run_id") == run_id)


def read_results(
    path: PathOrUri, run_id: str | None = None, *, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """The whole dataset of one sweep (or one run of it) as a DataFrame."""
    return read_table(path, run_id, filesystem=filesystem).to_pandas()
