"""One invocation of a sweep: plan, run on an executor, store and track each result, report."""

import datetime as dt
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from analysis.store import ResultStore
from orchestrator.executors import LocalExecutor, RayExecutor, make_executor
from orchestrator.planning import Plan, plan_trials
from orchestrator.progress import SweepProgress
from workloads.environment import code_version
from workloads.trial import Trial, TrialResult


@dataclass
class SweepOutcome:
    run_id: str
    results_path: Path
    report_path: Path | None
    counts: dict[str, int]
    mlflow_run_id: str | None


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def make_records(context: dict, trial: Trial, result: TrialResult) -> list[dict]:
    """The dataset rows of one result: run context (sweep, run_id, attempt, code_version) + trial
    config + result. One row, except in phase prune: one per number of heads kept, the full model
    under the trial's own id, each smaller model under `trial.row_id(heads_kept)`."""
    record = {**context, "trial_id": trial.trial_id, **trial.columns(), **result.as_dict()}
    if not result.pruning:
        return [record]
    rows = []
    for point in result.pruning:
        full_model = point["removed_head"] is None
        rows.append(
            {
                **record,
                **point,
                "trial_id": trial.trial_id if full_model else trial.row_id(point["heads_kept"]),
                "train_curve": record["train_curve"] if full_model else None,
            }
        )
    return rows


def _flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat MLflow params ("sweep.axes.seq_len": "[64, 128]")."""
    flat = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def run_sweep(cfg: DictConfig, plan: Plan | None = None) -> SweepOutcome:
    """Run a validated config end to end; every trial ends as a row, failures included."""
    plan = plan or plan_trials(cfg.sweep)
    # Connect first: a cluster that cannot be reached fails here, before any run or file exists.
    with make_executor(cfg.executor, OmegaConf.to_object(cfg.ray)) as executor:
        return _run(cfg, plan, executor)


def _run(cfg: DictConfig, plan: Plan, executor: LocalExecutor | RayExecutor) -> SweepOutcome:
    sweep, run_id = cfg.sweep.name, new_run_id()
    context = {"sweep": sweep, "run_id": run_id, "attempt": 1, "code_version": code_version()}
    store = ResultStore(cfg.results_dir, sweep, run_id)
    tracker = _start_tracking(cfg, run_id, context["code_version"]) if cfg.tracking.enabled else None
    counts: dict[str, int] = {}
    progress = SweepProgress(len(plan.trials), cfg.progress, title=sweep)

    def on_result(trial: Trial, result: TrialResult) -> None:
        records = make_records(context, trial, result)
        store.append(records)  # durable before anything else: a crash loses only trials in flight
        if tracker is not None:
            for record in records:
                tracker.log_trial(record)
        counts[result.status] = counts.get(result.status, 0) + 1
        progress.update(trial, result)

    settings = OmegaConf.to_object(cfg.measure)
    mlflow_status = "FAILED"
    try:
        with progress:
            executor.run(plan.trials, settings, on_result)
        mlflow_status = "FINISHED"
    except KeyboardInterrupt:
        mlflow_status = "KILLED"
        raise
    finally:
        final = store.finalize()
        report_path = None
        if cfg.report and final is not None and mlflow_status == "FINISHED":
            report_path = _build_report(store.path, Path(cfg.reports_dir) / sweep)
        if tracker is not None:
            # The run's compacted file is exactly this run's rows: it is the dataset artifact.
            artifacts = {"dataset": final, "report": report_path.parent if report_path else None}
            tracker.finish(mlflow_status, {name: path for name, path in artifacts.items() if path})
    return SweepOutcome(run_id, store.path, report_path, counts, tracker.parent_run_id if tracker else None)


def _start_tracking(cfg: DictConfig, run_id: str, version: str):
    from orchestrator.tracking import Tracker

    try:
        return Tracker(
            cfg.tracking.uri,
            cfg.sweep.name,
            run_id,
            _flat_params(cfg),
            tags={"run_id": run_id, "code_version": version},
        )
    except Exception as exc:  # results still go to Parquet; tracking is not worth losing a sweep over
        warnings.warn(
            f"MLflow tracking is off for this run, it could not start: {str(exc).splitlines()[0]}",
            stacklevel=2,
        )
        return None


def _build_report(results_path: Path, out_dir: Path) -> Path:
    from analysis.report import build_report

    return build_report(results_path, out_dir).html
