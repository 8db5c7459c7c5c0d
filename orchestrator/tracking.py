"""MLflow layout (docs/architecture.md §3): experiment = sweep, one parent run per invocation, one
child run per trial (params = the trial's config, metrics = its numeric columns and, for trained phases, the
training curve as step metric `train_loss`; tags = run id, trial id, attempt, status, variant,
backend, phase, device). The parent carries the report and this run's rows as artifacts.

Logging happens on one background thread, each trial in one `log_batch`, so a slow tracking
server never holds a sweep back. If MLflow fails, at the start or mid-sweep, the sweep goes on:
results are in Parquet already; the tracker warns once (naming the store and the `attnsweep sync`
command that logs the missing trials later, see orchestrator/sync.py) and stops logging. Both paths
log a row with the same function, `log_child`, so a synced child is the child a live sweep logs.
"""

import contextlib
import datetime as dt
import logging
import math
import os
import queue
import shlex
import sqlite3
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.schema import CONFIG_COLUMNS, NUMERIC_COLUMNS, PLANNED_STATUSES, STATUSES
from orchestrator.messages import first_line

# MLflow (and the SQLAlchemy it brings) is imported in the functions that use it, never here: a sweep
# with tracking.enabled=false runs where MLflow is not installed (the GPU host).

# A child's identity: which row of the dataset it is (the dedupe key of `attnsweep sync`). Set when
# the child is created, so even a child whose logging was cut short by an outage is recognised.
IDENTITY_TAGS = ("run_id", "trial_id", "attempt")
CHILD_TAGS = (*IDENTITY_TAGS, "status", "variant", "backend", "phase", "device")
# MLflow refuses tag values over 8000 characters; CUDA kernel names are long C++ templates.
MAX_TAG_CHARS = 5000
# Columns that are configuration or bookkeeping, not measurements, though numeric.
NOT_METRICS = set(CONFIG_COLUMNS) | {"attempt"}
# The MLflow status that closes a trial's child run: FINISHED when the trial ran as planned, else
# (an unknown status too) FAILED.
MLFLOW_RUN_STATUS = {status: "FINISHED" if status in PLANNED_STATUSES else "FAILED" for status in STATUSES}
# MLflow's HTTP client retries 7 times with backoff and waits 120 s per request by default: minutes
# of a dead server before the tracker learns it is dead. These apply unless the environment sets them
# (MLflow reads them at every request, process-wide; there is no per-client setting). With a server,
# MLflow would also print a "View run" line (after one more request) for every run it closes.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
MAX_BATCH = 1000  # MLflow's limit on entities per log_batch (and metrics per batch)


def resolve_tracking_uri(uri: str | None) -> str:
    """`uri`, else MLflow's own default (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here), with a
    relative SQLite path made absolute: MLflow caches stores by URI, so a relative one would stay
    bound to the directory where it was first opened."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


WAL_STORES: set[str] = set()  # SQLite files whose connections in this process skip the fsync per commit


def use_write_ahead_log(uri: str) -> None:
    """Put a SQLite store (created here when missing) in write-ahead-log mode, which persists in the
    file, and make this process's connections to it commit without waiting for the disk
    (synchronous=NORMAL: in WAL mode an application crash loses nothing and a power cut at most the
    last commits, never the database; the Parquet dataset is the record and `attnsweep sync` restores
    what a store lacks). In SQLite's default mode each commit waits for fsyncs, and MLflow commits
    about five times per child run: a child took 27 ms here, 16 ms with WAL and NORMAL. Readers such
    as `mlflow ui` on the same host are unaffected. A store SQLite cannot open is left for MLflow to
    report."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    path = Path(uri[len(prefix) :])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=20)) as connection:
            connection.execute("PRAGMA journal_mode=WAL").fetchall()
    except (OSError, sqlite3.Error):
        return
    if not WAL_STORES:
        event.listen(Engine, "connect", _commit_without_fsync)
    WAL_STORES.add(str(path.resolve()))


def _commit_without_fsync(connection, _record) -> None:
    """SQLAlchemy's hook on every new database connection of this process: MLflow's to a WAL store."""
    if isinstance(connection, sqlite3.Connection):
        files = {row[2] for row in connection.execute("PRAGMA database_list")}
        if files & WAL_STORES:
            connection.execute("PRAGMA synchronous=NORMAL")


def make_client(uri: str):
    """An MlflowClient for `uri` (resolved) that gives up on a dead server in seconds, not minutes."""
    from mlflow import MlflowClient

    for name, value in CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    use_write_ahead_log(uri)
    for noisy in ("alembic", "mlflow.store"):  # schema-migration chatter on a fresh store
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str) -> str:
    """The id of experiment `name`, created when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by a concurrent sweep
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def millis(timestamp: Any) -> int:
    """A row's `timestamp` (datetime, UTC) in MLflow's milliseconds; now when the row has none."""
    if isinstance(timestamp, dt.datetime):
        return int(timestamp.timestamp() * 1000)
    return int(time.time() * 1000)


def sync_command(results_path: str | os.PathLike, uri: str) -> str:
    """The command that logs a dataset's missing rows to `uri` later."""
    command = f"attnsweep sync {shlex.quote(str(results_path))}"
    if uri != resolve_tracking_uri(None):
        command += f" --tracking-uri {shlex.quote(uri)}"
    return command


def child_key(values: Mapping[str, Any]) -> tuple[str, str]:
    """(trial_id, attempt) of a row or of a child run's tags: the child's identity under its parent
    (the parent stands for the run_id). Rows and children from before `attempt` existed count as 1."""
    attempt = values.get("attempt")
    return str(values.get("trial_id") or ""), str(attempt if attempt not in (None, "") else 1)


def child_run_name(record: Mapping[str, Any]) -> str:
    return f"{record['variant']}-{record['backend']}-{record['phase']}-n{record['seq_len']}"


def child_run_contents(record: Mapping[str, Any]):
    """(params, metrics, tags) of one result row, as MLflow entities."""
    from mlflow.entities import Metric, Param, RunTag

    when = millis(record.get("timestamp"))
    params = [Param(key, str(record[key])) for key in CONFIG_COLUMNS if record.get(key) is not None]
    metrics = [
        Metric(key, float(record[key]), when, 0)
        for key in NUMERIC_COLUMNS
        if key not in NOT_METRICS and record.get(key) is not None and math.isfinite(float(record[key]))
    ]
    # The training curve of the trained phases, as a step series MLflow charts against the step.
    metrics += [
        Metric("train_loss", float(point["loss"]), when, int(point["step"]))
        for point in record.get("train_curve") or []
        if math.isfinite(float(point["loss"]))
    ]
    tags = [RunTag(key, str(record[key] if record.get(key) is not None else "")) for key in CHILD_TAGS]
    tags.append(RunTag("interpreted", str(bool(record["interpreted"])).lower()))
    if record.get("kernels") is not None and len(record["kernels"]):  # what ran, searchable in MLflow
        tags.append(RunTag("kernels", "; ".join(record["kernels"])[:MAX_TAG_CHARS]))
    return params, metrics, tags


def log_child(client, experiment: str, parent_run_id: str, record: Mapping[str, Any]) -> str:
    """Log one result row as a child run of `parent_run_id`; its MLflow run id. The live tracker and
    `attnsweep sync` both log through here. Three store calls (create with every tag, one batch of
    params and metrics, close): each call of MLflow's SQL store costs milliseconds of CPU, and the
    tags set at creation include the identity, so even a child cut short is recognised."""
    params, metrics, tags = child_run_contents(record)
    when = millis(record.get("timestamp"))
    run = client.create_run(
        experiment,
        start_time=when,
        run_name=child_run_name(record),
        tags={"mlflow.parentRunId": parent_run_id, **{tag.key: tag.value for tag in tags}},
    )
    run_id = run.info.run_id
    # One batch unless a long training curve passes MLflow's limit of entities per batch.
    room = MAX_BATCH - len(params)
    client.log_batch(run_id, metrics=metrics[:room], params=params)
    for start in range(room, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])
    client.set_terminated(run_id, MLFLOW_RUN_STATUS.get(record["status"], "FAILED"), end_time=when)
    return run_id


class Tracker:
    """MLflow logging of one sweep invocation. Never raises: a store that cannot be used, at the start
    or later, turns tracking off for the rest of the run with one warning. Everything MLflow does,
    opening the store and the parent run included, happens on the logger thread: the sweep's workers
    start meanwhile, and `parent_run_id` is known once `finish` has returned."""

    def __init__(
        self,
        uri: str | None,
        sweep: str,
        run_id: str,
        sweep_params: Mapping[str, Any],
        tags: Mapping[str, str],
        results_path: str | os.PathLike | None = None,
    ):
        self.uri = resolve_tracking_uri(uri)
        # Where the rows are, for the catch-up command the warning names (the resolved config has it).
        self.results_path = results_path or Path(str(sweep_params.get("results_dir", "results"))) / sweep
        self.parent_run_id: str | None = None
        self.logged = 0
        self._failed = False
        self._queue: queue.Queue = queue.Queue()
        parent = (sweep, run_id, sweep_params, tags)
        self._thread = threading.Thread(target=self._drain, args=parent, name="mlflow-logger", daemon=True)
        self._thread.start()

    def _start(self, sweep: str, run_id: str, sweep_params: Mapping[str, Any], tags: Mapping[str, str]):
        from mlflow.entities import Param

        self.client = make_client(self.uri)
        self.experiment_id = experiment_id(self.client, sweep)
        parent = self.client.create_run(
            self.experiment_id, run_name=run_id, tags={"sweep": sweep, "run_id": run_id, **tags}
        )
        self.parent_run_id = parent.info.run_id
        self.client.log_batch(
            self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in sweep_params.items()]
        )

    def _give_up(self, what: str, exc: Exception) -> None:
        """Stop logging; the first time, warn with the store and the command that catches up."""
        if self._failed:
            return
        self._failed = True
        reason = first_line(exc)
        warnings.warn(
            f"{what} ({self.uri} failed). The results are in Parquet; run "
            f"`{sync_command(self.results_path, self.uri)}` to log the missing trials. MLflow: {reason}",
            stacklevel=3,
        )

    def log_trial(self, record: Mapping[str, Any]) -> None:
        if not self._failed:
            self._queue.put(dict(record))

    def _drain(self, *parent) -> None:
        try:
            self._start(*parent)
        except Exception as exc:
            self._give_up("MLflow tracking is off for this run, it could not start", exc)
        while (record := self._queue.get()) is not None:
            if self._failed:
                continue
            try:
                log_child(self.client, self.experiment_id, self.parent_run_id, record)
                self.logged += 1
            except Exception as exc:
                self._give_up(f"MLflow tracking stopped after {self.logged} trial(s)", exc)

    def finish(self, status: str, artifacts: Mapping[str, Path] | None = None) -> None:
        """Wait for queued trials, attach artifacts {artifact dir: local file or dir}, close the parent.
        After a failure nothing more is sent: `attnsweep sync` closes the parent later."""
        self._queue.put(None)
        self._thread.join()
        if self._failed:
            return
        try:
            for artifact_dir, local in (artifacts or {}).items():
                if Path(local).is_dir():
                    self.client.log_artifacts(self.parent_run_id, str(local), artifact_dir)
                elif Path(local).exists():
                    self.client.log_artifact(self.parent_run_id, str(local), artifact_dir)
            self.client.set_terminated(self.parent_run_id, status)
        except Exception as exc:
            self._give_up(f"MLflow could not close run {self.parent_run_id}", exc)
