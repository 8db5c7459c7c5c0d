"""MLflow layout (DESIGN.md §3): experiment = sweep, one parent run per invocation, one child run per
trial (params = the trial's config, metrics = its numeric columns and, for trained phases, the
training curve as step metric `train_loss`; tags = id, status, variant, backend, device). The
parent carries the report and this run's rows as artifacts.

Logging happens on one background thread, each trial in one `log_batch`, so a slow tracking
server never holds a sweep back. If MLflow fails, the sweep goes on: results are in Parquet
already; the tracker warns once and stops logging.
"""

import logging
import math
import queue
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.schema import CONFIG_COLUMNS, NUMERIC_COLUMNS

CHILD_TAGS = ("trial_id", "status", "variant", "backend", "phase", "device")
# Columns that are configuration or bookkeeping, not measurements, though numeric.
NOT_METRICS = set(CONFIG_COLUMNS) | {"attempt"}
TERMINAL_STATUS = {"ok": "FINISHED", "unsupported": "FINISHED"}  # every other status: FAILED


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


def child_run_contents(record: Mapping[str, Any]):
    """(params, metrics, tags) of one result row, as MLflow entities."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    params = [Param(key, str(record[key])) for key in CONFIG_COLUMNS if record.get(key) is not None]
    metrics = [
        Metric(key, float(record[key]), now, 0)
        for key in NUMERIC_COLUMNS
        if key not in NOT_METRICS and record.get(key) is not None and math.isfinite(float(record[key]))
    ]
    # The training curve of the trained phases, as a step series MLflow charts against the step.
    metrics += [
        Metric("train_loss", float(point["loss"]), now, int(point["step"]))
        for point in record.get("train_curve") or []
        if math.isfinite(float(point["loss"]))
    ]
    tags = [RunTag(key, str(record[key] or "")) for key in CHILD_TAGS]
    tags.append(RunTag("interpreted", str(bool(record["interpreted"])).lower()))
    return params, metrics, tags


class Tracker:
    """MLflow logging of one sweep invocation."""

    def __init__(
        self,
        uri: str | None,
        sweep: str,
        run_id: str,
        sweep_params: Mapping[str, Any],
        tags: Mapping[str, str],
    ):
        from mlflow import MlflowClient

        for noisy in ("alembic", "mlflow.store"):  # schema-migration chatter on a fresh store
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = resolve_tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(sweep)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(sweep)
            except Exception:  # created meanwhile by a concurrent sweep
                self.experiment_id = self.client.get_experiment_by_name(sweep).experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        parent = self.client.create_run(self.experiment_id, run_name=run_id, tags={"sweep": sweep, **tags})
        self.parent_run_id = parent.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(
            self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in sweep_params.items()]
        )
        self._queue: queue.Queue = queue.Queue()
        self._failed = False
        self._thread = threading.Thread(target=self._drain, name="mlflow-logger", daemon=True)
        self._thread.start()

    def log_trial(self, record: Mapping[str, Any]) -> None:
        if not self._failed:
            self._queue.put(dict(record))

    def _drain(self) -> None:
        while (record := self._queue.get()) is not None:
            if self._failed:
                continue
            try:
                self._log_child(record)
            except Exception as exc:
                self._failed = True
                warnings.warn(
                    f"MLflow logging to {self.uri} failed, results stay in Parquet only: {exc}", stacklevel=1
                )

    def _log_child(self, record: Mapping[str, Any]) -> None:
        params, metrics, tags = child_run_contents(record)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{record['variant']}-{record['backend']}-{record['phase']}-n{record['seq_len']}",
            tags={"mlflow.parentRunId": self.parent_run_id},
        )
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
        self.client.set_terminated(run.info.run_id, TERMINAL_STATUS.get(record["status"], "FAILED"))

    def finish(self, status: str, artifacts: Mapping[str, Path] | None = None) -> None:
        """Wait for queued trials, attach artifacts {artifact dir: local file or dir}, close the parent."""
        self._queue.put(None)
        self._thread.join()
        try:
            for artifact_dir, local in (artifacts or {}).items():
                if Path(local).is_dir():
                    self.client.log_artifacts(self.parent_run_id, str(local), artifact_dir)
                elif Path(local).exists():
                    self.client.log_artifact(self.parent_run_id, str(local), artifact_dir)
            self.client.set_terminated(self.parent_run_id, status)
        except Exception as exc:
            warnings.warn(f"MLflow could not close run {self.parent_run_id}: {exc}", stacklevel=1)
