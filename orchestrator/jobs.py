"""Sweeps as Ray Jobs: `attnsweep submit` and `attnsweep jobs` (list, logs, stop, delete).

A submitted sweep runs `python3 -m orchestrator run OVERRIDES ray.address=auto` on the cluster's
head node, in a copy of this repository (Ray's `working_dir`, uploaded once per content; local
state such as .venv, results and MLflow stores stays behind). `python3` is the cluster's: its nodes
have attnsweep's dependencies installed (cluster/Dockerfile), and `-m orchestrator` runs the
uploaded code, not whatever attnsweep version a node may have installed. The driver writes the
results; the workers on every node send theirs back over Ray.

The submission id is the sweep's name and a hash of its resolved configuration and of the code's
version (`code_version`: the commit, '+dirty' with uncommitted changes, whatever they are), so
submitting the same sweep of the same version again finds the first job (its status, or its logs
with --wait) instead of running it twice; `attnsweep jobs delete ID` forgets an ended one.
"""

import asyncio
import datetime as dt
import hashlib
import logging
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from orchestrator.config import Config, ConfigError, load_config
from orchestrator.messages import first_line
from orchestrator.planning import plan_to_run
from workloads.environment import CODE_VERSION_ENV, code_version

# Ray's job client (and requests, which comes with Ray) is imported only where a job server is
# reached: `attnsweep submit` checks its configuration first, where Ray may not be installed.

ROOT = Path(__file__).resolve().parent.parent
# Never uploaded (besides what .gitignore names): local environments, results, tracking stores,
# caches. gitignore patterns: a leading '/' is the repository's top level.
EXCLUDES = [
    "/.git",
    "/.venv",
    "/results",
    "/reports",
    "/outputs",
    "/mlflow.db",
    "/mlruns",
    "/mlartifacts",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
]
ENTRYPOINT = ["python3", "-m", "orchestrator", "run"]
METADATA_SWEEP = "attnsweep_sweep"  # marks a job as attnsweep's (`attnsweep jobs` lists only these)
PROBE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 60.0


class JobsError(RuntimeError):
    """The job server cannot be reached or refused a request (exit code 1)."""


@dataclass
class Submission:
    sweep: str
    submission_id: str
    entrypoint: str
    runtime_env: dict
    metadata: dict[str, str]
    notes: list[str]  # what the user should know before the job runs


def job_overrides(overrides: list[str]) -> list[str]:
    """The overrides the job runs with: the user's, joined to the cluster (ray.address=auto) and
    with one log line per trial, unless the user said otherwise."""
    given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    extra = []
    if "ray.address" not in given and given.get("executor") != "local":
        extra.append("ray.address=auto")
    if "progress" not in given:
        extra.append("progress=lines")
    return [*overrides, *extra]


def _default_reports_dir(cfg: Config, overrides: list[str]) -> str | None:
    """The job runs in a temporary directory on the head node: results and reports go to absolute
    paths there, or results to an object store (ConfigError otherwise). Returns where reports go
    when the user did not say: beside a local results_dir (None: the user said, or there is no
    report); reports are local files, so beside an object store there is no default."""
    # Here, not at the top: analysis.store brings pandas, which `attnsweep jobs` does without.
    from analysis.store import local_path

    results = local_path(cfg.results_dir)  # None: an object store, the same from every node
    if results is not None and not results.is_absolute():
        raise ConfigError(
            f"results_dir={cfg.results_dir}: a submitted sweep runs in a temporary directory on the "
            "head node; give an absolute path there (a shared filesystem), e.g. results_dir=/shared/results, "
            "or an object store, e.g. results_dir=s3://bucket/results"
        )
    if not cfg.report:
        return None
    if any(o.split("=", 1)[0] == "reports_dir" for o in overrides):
        if not os.path.isabs(cfg.reports_dir):
            raise ConfigError(f"reports_dir={cfg.reports_dir}: give an absolute path on the head node")
        return None
    if results is None:
        raise ConfigError(
            f"results_dir={cfg.results_dir}: reports are local files on the head node; give "
            "reports_dir=/absolute/path there, or report=false"
        )
    return os.path.join(os.path.dirname(str(results).rstrip("/")), "reports")


def _quiet_ray() -> None:
    """Ray's job client logs each upload, its default excludes (EXCLUDES names them anyway) and the
    end of each log stream: only its errors are worth a line here."""
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)


def prepare(overrides: list[str]) -> Submission:
    """Validate the sweep here, as `attnsweep run` would (ConfigError before anything is sent), and
    describe its job."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError(
            f"submit: {ROOT} is not an attnsweep source tree (install it with `pip install -e .` "
            "from a checkout: the checkout is what gets uploaded)"
        )
    overrides = job_overrides(list(overrides))
    cfg = load_config(overrides)
    plan_to_run(cfg.sweep, cfg.max_trials)  # the same checks as `attnsweep run`, before anything is sent
    reports_dir = _default_reports_dir(cfg, overrides)
    if reports_dir is not None:
        overrides.append(f"reports_dir={reports_dir}")
        cfg.reports_dir = reports_dir
    notes = []
    if cfg.tracking.enabled and not cfg.tracking.uri:
        notes.append(
            "tracking.uri is not given: the job logs to the cluster's MLFLOW_TRACKING_URI, else to a SQLite "
            "file in its temporary directory (tracking.uri=http://MLFLOW-HOST:5000 names a server)"
        )
    sweep, version = cfg.sweep.name, code_version()
    digest = hashlib.sha256(f"{OmegaConf.to_yaml(cfg)}\n{version}".encode()).hexdigest()[:12]
    return Submission(
        sweep=sweep,
        submission_id=f"attnsweep-{sweep}-{digest}",
        entrypoint=shlex.join([*ENTRYPOINT, *overrides]),
        runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES, "env_vars": {CODE_VERSION_ENV: version}},
        metadata={
            METADATA_SWEEP: sweep,
            "attnsweep_overrides": shlex.join(overrides),
            "attnsweep_code": version,
        },
        notes=notes,
    )


@contextmanager
def _without_env(*names: str):
    """Ray's job client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is given;
    here the command line's --address is the one that counts."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextmanager
def _server_errors(address: str):
    """Everything the job server or the way to it can fail with, as one JobsError line."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise JobsError(
            f"--address {address}: the job server refused this client's token ({first_line(exc)}); set "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
        ) from exc
    except (ConnectionError, requests.RequestException) as exc:
        raise JobsError(f"--address {address}: no job server answers ({first_line(exc)})") from exc
    except RuntimeError as exc:  # Ray's client: any HTTP error status
        raise JobsError(f"--address {address}: {first_line(exc)}") from exc


def job_server_url(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS, checked to be an http(s) URL (ConfigError)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise ConfigError("--address: give the cluster's job server, e.g. --address http://HEAD:8265")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--address {address}: not a job server URL (http://HEAD:8265, the dashboard port)")
    return address


class JobServer:
    """A cluster's job server (http[s]://HEAD:8265): attnsweep's operations on its jobs."""

    def __init__(self, address: str | None):
        address = job_server_url(address)
        parts = urlsplit(address)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:  # fail in seconds where nothing listens (an unroutable host would hang for minutes)
            socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise JobsError(
                f"--address {address}: nothing answers at {parts.hostname}:{port} ({exc})"
            ) from exc
        from ray.job_submission import JobSubmissionClient

        _quiet_ray()

        self.address = address
        with _without_env("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"), _server_errors(address):
            self.client = JobSubmissionClient(address)

    def find(self, submission_id: str):
        """The job's JobDetails, or None when the cluster has no such job."""
        with _server_errors(self.address):
            return next((j for j in self.client.list_jobs() if j.submission_id == submission_id), None)

    def submit(self, submission: Submission):
        """Submit the sweep unless the cluster has its job already: (JobDetails of that job, or None)."""
        existing = self.find(submission.submission_id)
        if existing is not None:
            return existing
        with _server_errors(self.address):
            try:
                self.client.submit_job(
                    entrypoint=submission.entrypoint,
                    submission_id=submission.submission_id,
                    runtime_env=submission.runtime_env,
                    metadata=submission.metadata,
                )
            except RuntimeError:
                existing = self.find(submission.submission_id)  # submitted meanwhile by another
                if existing is None:
                    raise
                return existing
        return None

    def wait(self, submission_id: str, timeout_s: float | None = None):
        """Poll until the job has ended (or `timeout_s` passed): its JobDetails."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.find(submission_id)
            if job is None:
                raise JobsError(f"job {submission_id} is gone from {self.address} (deleted meanwhile)")
            if job.status.is_terminal() or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(1.0)

    def follow(self, submission_id: str, out=sys.stdout):
        """Stream the job's logs to `out` until it ends: its final JobDetails."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(submission_id):
                out.write(chunk)
                out.flush()

        try:
            asyncio.run(tail())
        except Exception as exc:  # the log stream broke, not the job: wait for its outcome
            print(
                f"attnsweep: lost the job's log stream ({first_line(exc)}); waiting for it to end",
                file=sys.stderr,
            )
        return self.wait(submission_id)

    def sweeps(self) -> list:
        """attnsweep's jobs on the cluster (known by their metadata), oldest first."""
        with _server_errors(self.address):
            jobs = [j for j in self.client.list_jobs() if (j.metadata or {}).get(METADATA_SWEEP)]
        return sorted(jobs, key=lambda j: j.start_time or 0)

    def existing(self, submission_id: str):
        """The job named on the command line; ConfigError when the cluster has none by that id."""
        job = self.find(submission_id)
        if job is None:
            raise ConfigError(f"{submission_id}: no such job at {self.address} (`attnsweep jobs` lists them)")
        return job

    def logs(self, submission_id: str) -> str:
        self.existing(submission_id)
        with _server_errors(self.address):
            return self.client.get_job_logs(submission_id)

    def stop(self, submission_id: str):
        """Stop the job and wait (up to STOP_TIMEOUT_S) until it has: its JobDetails."""
        job = self.existing(submission_id)
        if job.status.is_terminal():
            return job
        with _server_errors(self.address):
            self.client.stop_job(submission_id)
        return self.wait(submission_id, STOP_TIMEOUT_S)

    def delete(self, submission_id: str) -> None:
        """Forget an ended job: its id can be submitted again."""
        job = self.existing(submission_id)
        if not job.status.is_terminal():
            raise ConfigError(
                f"{submission_id} is {job.status.value}: stop it first (attnsweep jobs stop {submission_id})"
            )
        with _server_errors(self.address):
            self.client.delete_job(submission_id)


def describe(job) -> str:
    """One line of `attnsweep jobs`: id, status, sweep, start (UTC), overrides."""
    started = "-"
    if job.start_time:
        started = dt.datetime.fromtimestamp(job.start_time / 1000, dt.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
    metadata = job.metadata or {}
    return (
        f"{job.submission_id:<32}  {job.status.value:<9}  {metadata.get(METADATA_SWEEP, ''):<14}  "
        f"{started}  {metadata.get('attnsweep_overrides', '')}"
    )


def submit_sweep(overrides: list[str], address: str | None, wait: bool, out=sys.stdout) -> int:
    """`attnsweep submit`: 0 once the job is submitted (or found submitted already); with `wait`, once
    it has succeeded. JobsError when it failed, was stopped, or the server cannot be reached;
    ConfigError (before anything is sent) for a sweep `attnsweep run` would refuse."""
    address = job_server_url(address)
    submission = prepare(overrides)
    server = JobServer(address)
    for note in submission.notes:
        print(f"attnsweep: {note}", file=sys.stderr)
    job_id = submission.submission_id
    existing = server.submit(submission)
    if existing is None:
        print(f"submitted sweep {submission.sweep} as {job_id} to {server.address}", file=out)
    else:
        print(f"sweep {submission.sweep} is already submitted as {job_id}: {existing.status.value}", file=out)
    if not wait and (existing is None or not existing.status.is_terminal()):
        print(f"logs: attnsweep jobs logs {job_id} --follow\nstop: attnsweep jobs stop {job_id}", file=out)
        return 0
    try:
        job = server.follow(job_id, out) if wait else existing
    except KeyboardInterrupt:
        print(
            f"attnsweep: stopped following {job_id}; the job goes on (attnsweep jobs stop {job_id})",
            file=sys.stderr,
        )
        return 130
    if job.status.value != "SUCCEEDED":
        again = f"; `attnsweep jobs delete {job_id}` lets you submit it again" if existing is not None else ""
        raise JobsError(f"job {job_id} {job.status.value}: {first_line(job.message or '')}{again}")
    print(f"job {job_id} SUCCEEDED", file=out)
    return 0


def manage_jobs(action: str, job_id: str | None, address: str | None, follow: bool, out=sys.stdout) -> int:
    """`attnsweep jobs [list | logs ID [--follow] | stop ID | delete ID]`."""
    if action != "list" and not job_id:
        raise ConfigError(f"jobs {action}: give the job's submission id (`attnsweep jobs` lists them)")
    server = JobServer(address)
    if action == "list":
        jobs = server.sweeps()
        print(
            "\n".join(describe(j) for j in jobs) if jobs else f"no attnsweep jobs at {server.address}",
            file=out,
        )
    elif action == "logs":
        if follow:
            server.existing(job_id)
            server.follow(job_id, out)
        else:
            out.write(server.logs(job_id))
    elif action == "stop":
        job = server.stop(job_id)
        print(f"{job_id}: {job.status.value}", file=out)
    else:
        server.delete(job_id)
        print(f"{job_id}: deleted", file=out)
    return 0
