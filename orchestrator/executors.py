"""Run trials and hand each result to `on_result` as soon as it exists.

Executors are context managers: entering one connects to what it runs on (and fails there, with
ExecutorError, before a sweep creates anything), leaving it shuts down what it started.
`RayExecutor`: one actor per GPU (num_gpus=1) or `cpu_workers` CPU actors when the cluster has no
GPU; each actor gets its next trial when it returns one, and the driver collects with `ray.wait`
(`WorkerPool`: one method per event, as in Ray Tune's controller).
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

import torch

from orchestrator.config import RayConf
from orchestrator.messages import first_line
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
from workloads.trial import Trial, TrialResult

# Ray is imported in the functions that use it, never here: `executor=local` runs where Ray is not
# installed (the GPU host).

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
    """Once in a process that runs trials, before the first: cuBLAS's workspace, then every module a
    trial imports (this module imports `run_trial`, so they are loaded) frozen out of the garbage
    collector's generations.

    run_trial collects garbage after every GPU trial and every failure; with the imports frozen it does
    not walk torch's whole heap each time (about 0.12 s a GPU trial; a no-op trial's median fell from
    221 to 13 ms when it collected after every trial:
    benchmarks/results/cpu-amd-epyc/orchestration_overhead-n500-freeze-gc-*.md).
    """
    fix_cublas_workspace()
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
        for trial in trials:
            on_result(trial, run_trial(trial, settings))


class TrialWorker:
    """Ray actor body: runs trials on the resources Ray gave it (a GPU, or some CPU slots)."""

    def __init__(self, settings: MeasureSettings, threads: int):
        prepare_trial_process()  # first: nothing may start CUDA before cuBLAS's workspace is fixed
        torch.set_num_threads(threads)
        self.settings = settings

    def ready(self) -> bool:
        """Returns once the worker has started (imports done): its next trial starts then."""
        return True

    def run(self, trial: Trial) -> TrialResult:
        import ray

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
            f"ray.address={options.address}: cannot start or reach Ray ({where}): {first_line(exc)}"
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
    """A trial in flight: the worker running it, its run number, when its clock started."""

    actor: object
    trial: Trial
    tries: int
    started: float | None  # None while its worker is still starting (the timeout counts from then)


class WorkerPool:
    """The trials of one `RayExecutor.run` and the workers running them, shaped like Ray Tune's
    controller (ray/tune/execution/tune_controller.py): `step()` waits for the next event and hands it
    to one method per event. Each worker takes the next trial when it returns one. A worker that dies
    is replaced and its trial run again (up to ray.max_attempts runs, then an `error` row); a trial past
    ray.trial_timeout_s is a `timeout` row and its worker is replaced; so is the worker of an
    out-of-memory trial, so that nothing it leaked can fail the next trials."""

    def __init__(self, resources: dict, settings: MeasureSettings, options: RayConf, on_result: OnResult):
        import ray

        self.worker_class = ray.remote(**resources)(TrialWorker)
        self.threads = resources["num_cpus"]
        self.settings = settings
        self.timeout_s = options.trial_timeout_s
        self.max_attempts = options.max_attempts
        self.on_result = on_result
        self.pending: deque[tuple[Trial, int]] = deque()  # (trial, its run number in this invocation)
        self.starting: dict = {}  # ready() ObjectRef -> the actor it belongs to, until the actor is up
        self.in_flight: dict = {}  # run() ObjectRef -> _Running

    def run(self, trials: Sequence[Trial], n_workers: int) -> None:
        """Every trial, on at most `n_workers` workers at once; returns when the last result is handed on."""
        self.start(trials, n_workers)
        while self.in_flight:
            self.step()

    def start(self, trials: Sequence[Trial], n_workers: int) -> None:
        """Queue the trials; start up to `n_workers` workers (no more than trials), each with its first."""
        self.pending.extend((trial, 1) for trial in trials)
        for _ in range(min(n_workers, len(self.pending))):
            self.submit(self.new_worker())

    def step(self) -> None:
        """Wait for the next event (a worker up, a trial returned, a trial out of time) and handle it."""
        import ray

        waiting_on = [*self.starting, *self.in_flight]
        ready, _ = ray.wait(waiting_on, num_returns=1, timeout=self.time_to_deadline())
        if not ready:
            self.on_timeout()
        elif ready[0] in self.starting:
            self.on_worker_ready(ready[0])
        else:
            self.on_trial_returned(ready[0])

    def new_worker(self):
        actor = self.worker_class.remote(self.settings, self.threads)
        self.starting[actor.ready.remote()] = actor
        return actor

    def replace(self, actor):
        import ray

        ray.kill(actor, no_restart=True)
        return self.new_worker()

    def submit(self, actor) -> None:
        """The next pending trial to `actor`; its clock starts now if the actor is up, else when it is."""
        trial, tries = self.pending.popleft()
        is_up = actor not in self.starting.values()
        started = time.monotonic() if is_up else None
        self.in_flight[actor.run.remote(trial)] = _Running(actor, trial, tries, started)

    def time_to_deadline(self) -> float | None:
        """Seconds until the oldest started trial runs out of time; None: no limit, or none started."""
        started = [running.started for running in self.in_flight.values() if running.started is not None]
        if self.timeout_s is None or not started:
            return None
        return max(0.0, min(started) + self.timeout_s - time.monotonic())

    def finish(self, actor, trial: Trial, result: TrialResult) -> None:
        """The worker's next trial first: storing and logging this result must not idle it."""
        if self.pending:
            self.submit(actor)
        self.on_result(trial, result)

    def on_worker_ready(self, ready_ref) -> None:
        """A worker is up: its trial's clock starts now."""
        actor = self.starting.pop(ready_ref)
        for running in self.in_flight.values():
            if running.actor is actor and running.started is None:
                running.started = time.monotonic()

    def on_timeout(self) -> None:
        """The oldest started trial ran out of time: a `timeout` row, and a fresh worker."""
        started = [ref for ref, running in self.in_flight.items() if running.started is not None]
        running = self.in_flight.pop(min(started, key=lambda ref: self.in_flight[ref].started))
        message = f"timeout: still running after ray.trial_timeout_s={self.timeout_s:g} s; worker replaced"
        self.finish(self.replace(running.actor), running.trial, _failed(message, "timeout", running.tries))

    def on_trial_returned(self, ref) -> None:
        """A trial's call returned: a result, a failed call, or a dead worker."""
        import ray
        from ray.exceptions import RayActorError, RayError

        running = self.in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as exc:  # the worker process died
            self.on_worker_died(running, exc)
            return
        except RayError:
            result = _failed(traceback.format_exc(), tries=running.tries)
        result.tries = running.tries
        if result.status == "oom":
            self.on_out_of_memory(running, result)
        else:
            self.on_trial_result(running, result)

    def on_trial_result(self, running: _Running, result: TrialResult) -> None:
        """A trial passed or failed (an `error` row): its worker goes on with the next trial."""
        self.finish(running.actor, running.trial, result)

    def on_worker_died(self, running: _Running, exc: Exception) -> None:
        """Replace the worker; run the trial again first, or after ray.max_attempts runs, an `error` row."""
        actor = self.replace(running.actor)
        if running.tries < self.max_attempts:
            self.pending.appendleft((running.trial, running.tries + 1))
            self.submit(actor)
            return
        message = f"worker died while running the trial ({running.tries} runs): {first_line(exc)}"
        self.finish(actor, running.trial, _failed(message, tries=running.tries))

    def on_out_of_memory(self, running: _Running, result: TrialResult) -> None:
        """An `oom` row; the worker is replaced, so that nothing it leaked can fail the next trials."""
        self.finish(self.replace(running.actor), running.trial, result)


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
        """Every trial on a `WorkerPool` of `worker_layout`'s workers; each result to `on_result`."""
        import ray

        n_workers, resources = worker_layout(ray.cluster_resources(), self.options)
        WorkerPool(resources, settings, self.options, on_result).run(trials, n_workers)


def make_executor(executor: str, options: RayConf) -> LocalExecutor | RayExecutor:
    return LocalExecutor() if executor == "local" else RayExecutor(options)
