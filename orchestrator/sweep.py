"""One invocation of a sweep: plan, run on an executor, store and track each result, report."""

import dataclasses
import datetime as dt
import json
import secrets
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from analysis.schema import KEPT_BY_RESUME, STATUSES
from analysis.store import ResultStore, StoreLock, dataset_name, join, local_path, probe, trial_history
from orchestrator.config import Config, ConfigError
from orchestrator.executors import LocalExecutor, RayExecutor, make_executor
from orchestrator.messages import first_line
from orchestrator.planning import Plan, plan_trials
from orchestrator.progress import SweepProgress
from orchestrator.tracking import Tracker
from workloads.environment import code_version
from workloads.fingerprint import implementation_fingerprint
from workloads.trial import TRAINED_PHASES, Trial, TrialResult
from workloads.variants import get_variant


@dataclass
class SweepOutcome:
    run_id: str
    results_path: Path | str  # a URI string when results_dir is one
    report_path: Path | None
    counts: dict[str, int]
    mlflow_run_id: str | None
    already_done: int = 0  # trials of the plan the store holds as done (resume: KEPT_BY_RESUME)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def make_records(context: dict, trial: Trial, result: TrialResult) -> list[dict]:
    """The dataset rows of one result: run context (sweep, run_id, attempt, code_version) + trial
    config + result. One row, except in phase prune: one per number of heads kept, the full model
    under the trial's own id, each smaller model under `trial.row_id(heads_kept)`."""
    record = {
        **context,
        "trial_id": trial.trial_id,
        "impl_hash": implementation_fingerprint(trial),
        **trial.columns(),
        **result.as_dict(),
    }
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


def _flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as flat MLflow params ("sweep.axes.seq_len": "[64, 128]")."""
    flat = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk(dataclasses.asdict(cfg), "")
    return flat


def check_writable(results_dir: str) -> None:
    """ConfigError unless results can be written there, leaving nothing behind: a local directory
    (plain path or file:// URI) that can be created and written, or an object-store location where
    a probe object can be written and deleted."""
    try:
        local = local_path(results_dir)
        if local is None:
            probe(results_dir)
            return
        path = local.absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        tempfile.TemporaryFile(dir=existing).close()
    except (OSError, pa.ArrowException) as exc:  # ArrowInvalid: a URI pyarrow refuses
        reason = first_line(exc)
        raise ConfigError(f"results_dir={results_dir}: cannot write results there ({reason})") from exc


def trials_to_run(
    trials: list[Trial], results_path: Path | str, resume: bool, retry_failed: bool
) -> tuple[list[Trial], dict]:
    """(trials still to run, rows each trial already has in the store). With resume, a trial is done
    when its latest row's status is in KEPT_BY_RESUME (ok, oom, unsupported; with retry_failed=false,
    whatever its status) and it measured the code the trial would run now (`impl_hash`: a trial whose
    kernel, variant file or torch changed runs again; a row from before impl_hash existed counts as
    the same code)."""
    if not resume:
        return list(trials), {}
    history = trial_history(results_path)
    finished = KEPT_BY_RESUME if retry_failed else STATUSES
    kept = history[history["status"].isin(finished)]["impl_hash"].to_dict()

    def done(trial: Trial) -> bool:
        return trial.trial_id in kept and kept[trial.trial_id] in (None, implementation_fingerprint(trial))

    return [t for t in trials if not done(t)], history["attempts"].to_dict()


def schedule(trials: list[Trial]) -> list[Trial]:
    """Longest first (by the cost model's estimate): the expensive points start while the cheap
    ones fill the gaps at the end, instead of one long point holding up the end of the sweep."""
    return sorted(trials, key=estimated_seconds, reverse=True)


def estimated_seconds(trial: Trial) -> float:
    """A rough duration to order trials by: roofline time at a nominal 100 TFLOP/s and 1 TB/s, and for
    the trained phases ~6 flops per parameter and token for every step (with the same scale)."""
    try:
        cost = get_variant(trial.variant).trial_cost(trial)
    except Exception:  # an unknown variant fails fast in its trial; its order does not matter
        return 0.0
    seconds = max(cost.flops / 1e14, cost.bytes_moved / 1e12)
    if trial.phase in TRAINED_PHASES:
        steps = json.loads(trial.quality)["train"]["steps"]
        seconds = steps * 6 * 12 * (trial.n_heads * trial.head_dim) ** 2 * trial.batch * trial.seq_len / 1e14
    return seconds


def run_sweep(cfg: Config, plan: Plan | None = None) -> SweepOutcome:
    """Run a validated config end to end; every trial ends as a row, failures included.
    Raises ConfigError (results_dir not writable), ExecutorError (Ray unreachable) or StoreBusy
    (another run writes this sweep's dataset) before any trial runs."""
    plan = plan or plan_trials(cfg.sweep)
    check_writable(cfg.results_dir)
    results_path = join(cfg.results_dir, cfg.sweep.name)
    still_to_run, _ = trials_to_run(plan.trials, results_path, cfg.resume, cfg.retry_failed)
    if not still_to_run:  # all done already: nothing to start
        return _nothing_to_run(cfg, results_path, len(plan.trials))
    # Connect first: a cluster that cannot be reached fails here, before any run or file exists.
    with make_executor(cfg.executor, cfg.ray) as executor:
        with StoreLock(results_path):  # what is done is decided under the lock
            todo, previous = trials_to_run(plan.trials, results_path, cfg.resume, cfg.retry_failed)
            outcome = _run(cfg, schedule(todo), previous, executor)
            outcome.already_done = len(plan.trials) - len(todo)
            return outcome


def _nothing_to_run(cfg: Config, results_path: Path | str, n_trials: int) -> SweepOutcome:
    out_dir = Path(cfg.reports_dir) / cfg.sweep.name
    report = _build_report(results_path, out_dir, cfg.report_baseline) if cfg.report else None
    return SweepOutcome("", results_path, report, {}, None, already_done=n_trials)


def _run(
    cfg: Config, trials: list[Trial], previous: dict[str, int], executor: LocalExecutor | RayExecutor
) -> SweepOutcome:
    sweep, run_id = cfg.sweep.name, new_run_id()
    context = {"sweep": sweep, "run_id": run_id, "code_version": code_version()}
    store = ResultStore(cfg.results_dir, sweep, run_id)
    tracker = _start_tracking(cfg, run_id, context["code_version"]) if cfg.tracking.enabled else None
    counts: dict[str, int] = {}
    progress = SweepProgress(len(trials), cfg.progress, title=sweep)

    def on_result(trial: Trial, result: TrialResult) -> None:
        attempt = previous.get(trial.trial_id, 0) + result.tries
        records = make_records({**context, "attempt": attempt}, trial, result)
        store.append(records)  # on disk within a second: a crash loses only that and trials in flight
        if tracker is not None:
            for record in records:
                tracker.log_trial(record)
        counts[result.status] = counts.get(result.status, 0) + 1
        progress.update(trial, result)

    mlflow_status = "FAILED"
    try:
        with progress:
            executor.run(trials, cfg.measure, on_result)
        mlflow_status = "FINISHED"
    except KeyboardInterrupt:
        mlflow_status = "KILLED"
        raise
    finally:
        final = store.finalize()
        report_path = None
        if cfg.report and final is not None and mlflow_status == "FINISHED":
            report_path = _build_report(store.path, Path(cfg.reports_dir) / sweep, cfg.report_baseline)
        if tracker is not None:
            with tempfile.TemporaryDirectory() as scratch:
                # The run's compacted file is exactly this run's rows: it is the dataset artifact.
                dataset = _local_file(final, scratch) if final is not None else None
                artifacts = {"dataset": dataset, "report": report_path.parent if report_path else None}
                tracker.finish(mlflow_status, {name: path for name, path in artifacts.items() if path})
    return SweepOutcome(run_id, store.path, report_path, counts, tracker.parent_run_id if tracker else None)


def _local_file(path: Path | str, scratch: str) -> Path | None:
    """`path` as a local file MLflow can log: itself when local, else a copy in `scratch` (None, with
    a warning, when it cannot be fetched: the dataset is in the store all the same)."""
    local = local_path(path)
    if local is not None:
        return local
    copy = Path(scratch) / dataset_name(path)
    try:
        pafs.copy_files(str(path), str(copy))
    except (OSError, pa.ArrowException) as exc:
        warnings.warn(f"MLflow gets no dataset artifact, {path} could not be fetched: {exc}", stacklevel=2)
        return None
    return copy


def _start_tracking(cfg: Config, run_id: str, version: str) -> Tracker | None:
    try:
        return Tracker(
            cfg.tracking.uri,
            cfg.sweep.name,
            run_id,
            _flat_params(cfg),
            tags={"run_id": run_id, "code_version": version},
            results_path=join(cfg.results_dir, cfg.sweep.name),  # for its `attnsweep sync` hint
        )
    except Exception as exc:  # results still go to Parquet; tracking is not worth losing a sweep over
        warnings.warn(
            f"MLflow tracking is off for this run, it could not start: {first_line(exc)}",
            stacklevel=2,
        )
        return None


def _build_report(results_path: Path | str, out_dir: Path, baseline: str) -> Path:
    # Here, not at the top: the report needs matplotlib, which the GPU host lacks (it runs report=false).
    from analysis.report import build_report

    return build_report(results_path, out_dir, baseline=baseline).html
