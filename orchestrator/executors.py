"""Run trials and hand each result to `on_result` as soon as it exists.

Executors are context managers: entering one connects to what it runs on (and fails there, with
ExecutorError, before a sweep creates anything), leaving it shuts down what it started.
`RayExecutor`: one actor per GPU (num_gpus=1) or `cpu_workers` CPU actors when the cluster has no
GPU; each actor gets its next trial when it returns one, and the driver collects with `ray.wait`.
`LocalExecutor`: the same trials one after the other in this process, no Ray.
"""

import datetime as dt
import gc
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.config import RayConf
from workloads.measure import MeasureSettings
from workloads.trial import Trial, TrialResult

OnResult = Callable[[Trial, TrialResult], None]


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. an unreachable Ray cluster)."""


CUBLAS_WORKSPACE = ":4096:8"


def fix_cublas_workspace() -> None:
    """cuBLAS is deterministic only with a fixed workspace, which the trained phases need
    (`workloads.quality.train.deterministic`), and reads CUBLAS_WORKSPACE_CONFIG once, when CUDA first
    creates its handle: call this before anything in the process can start CUDA (the CLI's entry
    point, a worker's start). A value the user set is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def prepare_trial_process() -> None:
    """Once in a process that runs trials, before the first: cuBLAS's workspace, every module a trial
    imports, then those imports frozen out of the garbage collector's generations.

    run_trial collects garbage after every GPU trial and every failure; with the imports frozen it does
    not walk torch's whole heap each time (about 0.12 s a GPU trial; a no-op trial's median fell from
    221 to 13 ms when it collected after every trial:
    benchmarks/results/cpu-amd-epyc/orchestration_overhead-n500-freeze-gc-*.md).
    """
    fix_cublas_workspace()
    import workloads.runner  # noqa: F401  (everything a trial imports, before the freeze below)

    gc.freeze()


class LocalExecutor:
    """In this process. The imports stay frozen while it is entered; leaving it unfreezes them, so a
    process that goes on (a test session, a notebook) collects as before."""

    def __enter__(self) -> "LocalExecutor":
        prepare_trial_process()
        return self

    def __exit__(self, *exc) -> None:
        gc.unfreeze()

    def run(self, trials: Sequence[Trial], settings: MeasureSettings, on_result: OnResult) -> None:
        from workloads.runner import run_trial

        for trial in trials:
            on_result(trial, run_trial(trial, settings))


class TrialWorker:
    """Ray actor body: runs trials on the resources Ray gave it (a GPU, or some CPU slots)."""

    def __init__(self, settings: MeasureSettings, threads: int):
        prepare_trial_process()  # first: nothing may start CUDA before cuBLAS's workspace is fixed
        import torch

        torch.set_num_threads(threads)
        self.settings = settings

    def ready(self) -> bool:
        """Returns once the worker has started (imports done): its next trial starts then."""
        return True

    def run(self, trial: Trial) -> TrialResult:
        import ray

        from workloads.runner import run_trial

        result = run_trial(trial, self.settings)
        result.node = ray.get_runtime_context().get_node_id()
        result.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
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


def worker_layout(cluster_resources: dict[str, float], options: RayConf) -> tuple[int, dict]:
    """(number of actors, Ray options of each): one per GPU when the cluster has GPUs, else one per
    `cpus_per_worker` CPUs: `cpu_workers` of them, by default every CPU slot of a cluster the sweep
    joined (ray.address) and at most 2 on a local instance (each worker holds its own torch). SPREAD
    puts the actors on as many nodes as possible: a sweep uses the whole cluster, not one node."""
    spread = {"scheduling_strategy": "SPREAD"}
    n_gpus = int(cluster_resources.get("GPU", 0))
    if n_gpus:
        return n_gpus, {"num_gpus": 1, "num_cpus": 1, **spread}
    slots = max(1, int(cluster_resources.get("CPU", 0)) // options.cpus_per_worker)
    if options.cpu_workers is not None:
        n_workers = options.cpu_workers
    else:
        n_workers = slots if options.address else min(2, slots)
    return n_workers, {"num_cpus": options.cpus_per_worker, **spread}


def _failed(error: str, status: str = "error", tries: int = 1) -> TrialResult:
    return TrialResult(status=status, error=error, tries=tries, timestamp=dt.datetime.now(dt.timezone.utc))


@dataclass
class _Running:
    actor: object
    trial: Trial
    tries: int
    started: float | None  # None while its worker is still starting (the timeout counts from then)


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
        """Each worker takes the next trial when it returns one. A worker that dies is replaced and its
        trial run again (up to ray.max_attempts runs, then an `error` row); a trial past
        ray.trial_timeout_s is a `timeout` row and its worker is replaced; so is the worker of an
        out-of-memory trial, so that nothing it leaked can fail the next trials."""
        import ray
        from ray.exceptions import RayActorError, RayError

        n_workers, resources = worker_layout(ray.cluster_resources(), self.options)
        actor_class = ray.remote(**resources)(TrialWorker)
        timeout, max_attempts = self.options.trial_timeout_s, self.options.max_attempts

        starting: dict = {}  # ready() ObjectRef -> the actor it belongs to

        def make_worker():
            actor = actor_class.remote(settings, resources["num_cpus"])
            starting[actor.ready.remote()] = actor
            return actor

        def replace(actor):
            ray.kill(actor, no_restart=True)
            return make_worker()

        pending = deque((trial, 1) for trial in trials)  # (trial, its run number in this invocation)
        in_flight: dict = {}  # ObjectRef -> _Running

        def submit(actor) -> None:
            trial, tries = pending.popleft()
            is_up = actor not in starting.values()
            in_flight[actor.run.remote(trial)] = _Running(
                actor, trial, tries, time.monotonic() if is_up else None
            )

        def deadline_wait() -> float | None:
            started = [r.started for r in in_flight.values() if r.started is not None]
            if timeout is None or not started:
                return None
            return max(0.0, min(started) + timeout - time.monotonic())

        for _ in range(min(n_workers, len(pending))):
            submit(make_worker())
        while in_flight:
            ready, _ = ray.wait([*starting, *in_flight], num_returns=1, timeout=deadline_wait())
            if ready and ready[0] in starting:  # a worker is up: its trial's clock starts now
                actor = starting.pop(ready[0])
                for running in in_flight.values():
                    if running.actor is actor and running.started is None:
                        running.started = time.monotonic()
                continue
            if not ready:  # the oldest started trial ran out of time
                ref = min(
                    (r for r in in_flight if in_flight[r].started is not None),
                    key=lambda r: in_flight[r].started,
                )
                running = in_flight.pop(ref)
                actor = replace(running.actor)
                message = f"timeout: still running after ray.trial_timeout_s={timeout:g} s; worker replaced"
                if pending:
                    submit(actor)
                on_result(running.trial, _failed(message, "timeout", running.tries))
                continue
            ref = ready[0]
            running = in_flight.pop(ref)
            actor = running.actor
            try:
                result = ray.get(ref)
                result.tries = running.tries
            except RayActorError as exc:  # the worker process died: replace it, run the trial again
                actor = replace(actor)
                if running.tries < max_attempts:
                    pending.appendleft((running.trial, running.tries + 1))
                    submit(actor)
                    continue
                reason = str(exc).strip().splitlines()[0]
                message = f"worker died while running the trial ({running.tries} runs): {reason}"
                result = _failed(message, tries=running.tries)
            except RayError:
                result = _failed(traceback.format_exc(), tries=running.tries)
            if result.status == "oom":
                actor = replace(actor)
            if pending:  # the worker's next trial first: storing and logging this result must not idle it
                submit(actor)
            on_result(running.trial, result)


def make_executor(executor: str, options: RayConf) -> LocalExecutor | RayExecutor:
    return LocalExecutor() if executor == "local" else RayExecutor(options)
