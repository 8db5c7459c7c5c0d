"""`attnsweep sync RESULTS`: log to MLflow the rows of a results dataset that MLflow lacks.

For trials a sweep could not log (the tracking server was down, or the sweep ran with tracking off
on a GPU host without MLflow, its results/<sweep> copied over afterwards). Layout as a live sweep's
(orchestrator/tracking.py): experiment = the rows' `sweep`, one parent run per `run_id` (found by its
tags `sweep` and `run_id`, created when missing), one child per row, logged by the same
`tracking.log_child`. A row is there when its parent has a child with the row's (trial_id, attempt)
tags, so running sync twice, or after a sweep that logged part of its rows, adds no duplicates.

Run it once the sweeps writing to RESULTS have ended: until a run's rows are compacted into
`<run_id>.parquet`, an unfinished child of that run may be a live sweep's child being logged.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.store import dataset_exists, dataset_files, dataset_name, read_table
from orchestrator.messages import first_line
from orchestrator.tracking import (
    child_key,
    experiment_id,
    log_child,
    make_client,
    millis,
    resolve_tracking_uri,
)

PAGE = 1000  # runs per search page


class SyncError(Exception):
    """The tracking store could not be read or written."""


@dataclass
class SyncOutcome:
    synced: int  # rows logged now
    already: int  # rows that had their child run
    uri: str


def load_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The dataset's rows (a directory, or a URI of the results store) as plain Python values, typed
    exactly as the live sweep's records (not through pandas, which would turn an integer column with
    nulls into floats)."""
    if not dataset_exists(path):
        raise FileNotFoundError("no results dataset there")
    try:
        table = read_table(path)
    except Exception as exc:  # pyarrow: files that are not Parquet, or not of this schema
        raise ValueError(f"not a results dataset: {first_line(exc)}") from exc
    if table.num_rows == 0:
        raise ValueError("no result rows there")
    return table.to_pylist()


def sync(path: str | os.PathLike, uri: str | None = None) -> SyncOutcome:
    """Log the rows of dataset `path` missing from the tracking store `uri` (default: the live
    tracker's). Raises FileNotFoundError/ValueError for a path that is not a dataset, SyncError when
    the store fails (what was logged before stays, a second sync goes on from there)."""
    rows = load_rows(path)
    compacted = set(dataset_files(path))  # `<run_id>.parquet`: the run has ended
    uri = resolve_tracking_uri(uri)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault((row["sweep"] or dataset_name(path), row["run_id"] or ""), []).append(row)
    outcome = SyncOutcome(0, 0, uri)
    try:
        client = make_client(uri)
        experiments: dict[str, str] = {}
        for (sweep, run_id), run_rows in runs.items():
            if sweep not in experiments:
                experiments[sweep] = experiment_id(client, sweep)
            finished = f"{run_id}.parquet" in compacted
            _sync_run(client, experiments[sweep], sweep, run_id, run_rows, finished, outcome)
    except Exception as exc:
        raise SyncError(
            f"tracking store {uri}: {first_line(exc)} ({outcome.synced} rows synced before it failed)"
        ) from exc
    return outcome


def _search(client, experiment: str, filter_string: str, order_by: list[str] | None = None) -> list:
    """Every run matching `filter_string`, page by page."""
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment], filter_string, max_results=PAGE, order_by=order_by, page_token=token
        )
        found += page
        token = page.token
        if not token:
            return found


def _sync_run(
    client,
    experiment: str,
    sweep: str,
    run_id: str,
    rows: list[Mapping[str, Any]],
    finished: bool,
    outcome: SyncOutcome,
) -> None:
    # Parents carry the tags sweep and run_id; children carry run_id but not sweep.
    parents = _search(
        client,
        experiment,
        f"tags.sweep = '{sweep}' and tags.run_id = '{run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    parents = [p for p in parents if "mlflow.parentRunId" not in p.data.tags]
    times = [millis(row.get("timestamp")) for row in rows]
    if parents:
        parent_id = parents[0].info.run_id
    else:
        parent = client.create_run(
            experiment,
            start_time=min(times),
            run_name=run_id,
            tags={
                "sweep": sweep,
                "run_id": run_id,
                "code_version": str(rows[0].get("code_version") or ""),
                "mlflow.note.content": "Created by `attnsweep sync` from the results dataset: "
                "this run's configuration and artifacts were not logged.",
            },
        )
        parent_id = parent.info.run_id
        client.set_terminated(parent_id, "FINISHED", end_time=max(times))

    there: set[tuple[str, str]] = set()
    for parent in parents:
        for child in _search(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'"):
            key = child_key(child.data.tags)
            if child.info.status == "RUNNING" and finished:
                # Cut short mid-logging (the store failed between creating and closing it): redo it.
                client.delete_run(child.info.run_id)
            elif key[0]:
                there.add(key)

    for row in rows:
        key = child_key(row)
        if key in there:
            outcome.already += 1
            continue
        log_child(client, experiment, parent_id, row)
        there.add(key)
        outcome.synced += 1

    # A parent left open by a sweep whose tracking failed: its rows are all logged now.
    if finished and parents and parents[0].info.status == "RUNNING":
        client.set_terminated(parent_id, "FINISHED", end_time=max(times))
