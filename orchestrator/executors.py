"""Run trials and hand each result to `on_result` as soon as it exists.

`run_ray`: one actor per GPU (num_gpus=1) or `cpu_workers` CPU actors when the cluster has no GPU;
each actor gets its next trial when it returns one, and the driver collects with `ray.wait`.
`run_local`: the same trials one after the other in this process, no Ray.
"""

import datetime as dt
import traceback
from collections import deque
from collections.abc import Callable, Sequence

from orchestrator.config import RayConf
from workloads.measure import MeasureSettings
from workloads.trial import Trial, TrialResult

OnResult = Callable[[Trial, TrialResult], None]


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. an unreachable Ray cluster)."""


def run_local(trials: Sequence[Trial], settings: MeasureSettings, on_result: OnResult) -> None:
    from workloads.runner import run_trial

    for trial in trials:
        on_result(trial, run_trial(trial, settings))


class TrialWorker:
    """Ray actor body: runs trials on the resources Ray gave it (a GPU, or some CPU slots)."""

    def __init__(self, settings: MeasureSettings, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.settings = settings

    def run(self, trial: Trial) -> TrialResult:
        import ray

        from workloads.runner import run_trial

        result = run_trial(trial, self.settings)
        result.node = ray.get_runtime_context().get_node_id()
        return result


def _connect(options: RayConf) -> bool:
    """Initialise Ray unless this process already has; True when this call started it."""
    import ray

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


def run_ray(
    trials: Sequence[Trial], settings: MeasureSettings, on_result: OnResult, options: RayConf
) -> None:
    import ray
    from ray.exceptions import RayActorError, RayError

    started_here = _connect(options)
    try:
        n_workers, resources = worker_layout(ray.cluster_resources(), options)
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
    finally:
        if started_here:
            ray.shutdown()
