"""Run trials and hand each result to `on_result` as soon as it exists.

Executors are context managers: entering one connects to what it runs on (and fails there, with
ExecutorError, before a sweep creates anything), leaving it shuts down what it started.
`RayExecutor`: one actor per GPU (num_gpus=1) or `cpu_workers` CPU actors when the cluster has no
GPU; each actor gets its next trial when it returns one, and the driver collects with `ray.wait`.
`LocalExecutor`: the same trials one after the other in this process, no Ray.
"""

import datetime as dt
import socket
import traceback
from collections import deque
from collections.abc import Callable, Sequence

from orchestrator.config import RayConf
from workloads.measure import MeasureSettings
from workloads.trial import Trial, TrialResult

OnResult = Callable[[Trial, TrialResult], None]


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. an unreachable Ray cluster)."""


class LocalExecutor:
    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, trials: Sequence[Trial], settings: MeasureSettings, on_result: OnResult) -> None:
        from workloads.runner import run_trial

        for trial in trials:
            on_result(trial, run_trial(trial, settings))


class TrialWorker:
    """Ray actor body: runs trials on the resources Ray gave it (a GPU, or some CPU slots)."""

    def __init__(self, settings: MeasureSettings, threads: int):
        import os

        # Before CUDA first runs in this process: cuBLAS is deterministic only with a fixed workspace,
        # which the trained phases need (`workloads.quality.train.deterministic`).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        import torch

        torch.set_num_threads(threads)
        self.settings = settings

    def run(self, trial: Trial) -> TrialResult:
        import ray

        from workloads.runner import run_trial

        result = run_trial(trial, self.settings)
        result.node = ray.get_runtime_context().get_node_id()
        return result


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a `host:port` where nothing listens: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms are Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorError(f"ray.address={address}: nothing answers at {host}:{port} ({exc})") from exc


def _connect(options: RayConf) -> bool:
    """Initialise Ray unless this process already has; True when this call started it."""
    import ray

    if options.address:
        _probe(options.address)
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    try:
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options.address or "a local instance"
        raise ExecutorError(
            f"ray.address={options.address}: cannot start or reach Ray ({where}): {str(exc).splitlines()[0]}"
        ) from exc
    return True


def worker_layout(cluster_resources: dict[str, float], options: RayConf) -> tuple[int, dict[str, int]]:
    """(number of actors, resources of each): one per GPU when the cluster has GPUs, else CPU slots."""
    n_gpus = int(cluster_resources.get("GPU", 0))
    if n_gpus:
        return n_gpus, {"num_gpus": 1, "num_cpus": 1}
    return options.cpu_workers, {"num_cpus": options.cpus_per_worker}


def _failed(error: str) -> TrialResult:
    return TrialResult(status="error", error=error, timestamp=dt.datetime.now(dt.timezone.utc))


class RayExecutor:
    def __init__(self, options: RayConf):
        self.options = options
        self._started_ray = False

    def __enter__(self) -> "RayExecutor":
        self._started_ray = _connect(self.options)
        return self

    def __exit__(self, *exc) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()

    def run(self, trials: Sequence[Trial], settings: MeasureSettings, on_result: OnResult) -> None:
        import ray
        from ray.exceptions import RayActorError, RayError

        n_workers, resources = worker_layout(ray.cluster_resources(), self.options)
        actor_class = ray.remote(**resources)(TrialWorker)

        def make_worker():
            return actor_class.remote(settings, resources["num_cpus"])

        pending = deque(trials)
        in_flight = {}  # ObjectRef -> (actor, trial)

        def submit(actor) -> None:
            trial = pending.popleft()
            in_flight[actor.run.remote(trial)] = (actor, trial)

        for _ in range(min(n_workers, len(pending))):
            submit(make_worker())
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                actor, trial = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as exc:  # the worker process died: replace it
                    result = _failed(f"worker died while running the trial: {str(exc).splitlines()[0]}")
                    ray.kill(actor, no_restart=True)
                    actor = make_worker()
                except RayError:
                    result = _failed(traceback.format_exc())
                on_result(trial, result)
                if pending:
                    submit(actor)


def make_executor(executor: str, options: RayConf) -> LocalExecutor | RayExecutor:
    return LocalExecutor() if executor == "local" else RayExecutor(options)
