"""`WorkerPool`, one event at a time, on the session's real local Ray instance (2 CPUs, 2 logical GPUs):
each `step()` handles one event (a worker up, a result, a timeout, a dead worker, an out-of-memory
trial), and the tests check what that event left behind. The trials are the test-only variant
`test-fault` (tests/fault_variant.py), which sleeps, fails, dies or runs out of memory on command."""

import time

import pytest

from orchestrator.config import RayConf
from orchestrator.executors import WorkerPool, _Running
from workloads.measure import MeasureSettings
from workloads.trial import Trial, canonical_json

FAST = MeasureSettings(min_run_time_s=0.01)
ONE_CPU = {"num_cpus": 1}


def fault(action: str, seq_len: int = 16, **params) -> Trial:
    """A test-fault trial: `action` on its first `times` calls (every call when times=0)."""
    params = {"action": action, "seconds": 0.0, "times": 0, "marker": "", **params}
    return Trial(
        "test-fault", "torch-ref", "prefill", 1, seq_len, 2, 2, 8, "float32", True, canonical_json(params)
    )


class TrackedPool(WorkerPool):
    """A WorkerPool that remembers every worker it starts, so that the test's end can kill them all:
    an idle worker lives as long as something holds its handle (a failed test's traceback, a pool in a
    cycle with its on_result), and would hold one of the session cluster's 2 CPUs from later tests."""

    def __init__(self, *args):
        super().__init__(*args)
        self.every_worker = []

    def new_worker(self):
        self.every_worker.append(super().new_worker())
        return self.every_worker[-1]


@pytest.fixture
def make_pool(ray_cluster):
    """make_pool(on_result, **RayConf fields) -> a pool of 1-CPU workers, all killed when the test ends."""
    pools = []

    def make(on_result, **options) -> WorkerPool:
        pools.append(TrackedPool(ONE_CPU, FAST, RayConf(**options), on_result))
        return pools[-1]

    yield make
    for pool in pools:
        for actor in pool.every_worker:
            ray_cluster.kill(actor, no_restart=True)
    deadline = time.monotonic() + 60  # Ray frees a killed actor's CPU a moment later
    while ray_cluster.available_resources().get("CPU", 0) < ray_cluster.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, "a worker still holds a CPU after its test"
        time.sleep(0.1)


def only_running(pool: WorkerPool) -> _Running:
    (running,) = pool.in_flight.values()
    return running


def assert_dead(ray, actor) -> None:
    from ray.exceptions import RayActorError

    with pytest.raises(RayActorError):
        ray.get(actor.ready.remote(), timeout=60)


def test_time_to_deadline_counts_from_the_oldest_started_trial(ray_cluster):
    """Pure bookkeeping: real ObjectRefs as keys, no workers."""
    pool = WorkerPool(ONE_CPU, FAST, RayConf(trial_timeout_s=10), lambda trial, result: None)
    assert pool.time_to_deadline() is None  # nothing in flight
    now = time.monotonic()
    pool.in_flight[ray_cluster.put(1)] = _Running(None, fault("ok"), 1, None)
    assert pool.time_to_deadline() is None  # its worker is still starting: its clock has not started
    pool.in_flight[ray_cluster.put(2)] = _Running(None, fault("ok", 17), 1, now - 1)
    pool.in_flight[ray_cluster.put(3)] = _Running(None, fault("ok", 18), 1, now - 4)
    assert 5.0 < pool.time_to_deadline() <= 6.0  # the oldest: started 4 s ago, 10 s allowed
    pool.in_flight[ray_cluster.put(4)] = _Running(None, fault("ok", 19), 1, now - 30)
    assert pool.time_to_deadline() == 0.0  # overdue: ray.wait must not get a negative timeout
    pool.timeout_s = None
    assert pool.time_to_deadline() is None  # ray.trial_timeout_s=null: wait as long as it takes


def test_a_ready_worker_starts_its_trials_clock(make_pool):
    seen = []
    pool = make_pool(lambda trial, result: seen.append(result))
    pool.start([fault("sleep", seconds=1.0)], n_workers=2)
    assert len(pool.starting) == 1  # no more workers than trials
    running = only_running(pool)
    assert running.actor in pool.starting.values() and running.started is None
    before_up = time.monotonic()
    pool.step()  # the worker is up (its trial sleeps 1 s after that)
    assert pool.starting == {} and pool.in_flight and before_up < running.started <= time.monotonic()
    pool.step()
    assert [(result.status, result.tries) for result in seen] == [("ok", 1)] and pool.in_flight == {}


def test_a_result_gives_the_worker_its_next_trial_before_on_result(make_pool):
    """A failed trial is an `error` row; its worker (not replaced) already runs the next trial, with its
    clock started, when on_result sees the row."""
    failing, passing = fault("raise", 16), fault("ok", 17)
    seen, in_flight_seen = [], []

    def on_result(trial, result):
        seen.append((trial, result))
        in_flight_seen.append([(r.trial, r.actor, r.started is not None) for r in pool.in_flight.values()])

    pool = make_pool(on_result)
    pool.start([failing, passing], n_workers=1)
    worker = only_running(pool).actor
    pool.step()  # the worker is up
    pool.step()  # the failing trial returns
    ((trial, result),) = seen
    assert trial == failing and result.status == "error" and "injected fault" in result.error
    assert in_flight_seen == [[(passing, worker, True)]] and pool.starting == {}
    pool.step()
    assert [(trial, result.status) for trial, result in seen] == [(failing, "error"), (passing, "ok")]
    assert in_flight_seen[1] == [] and pool.in_flight == {}


def test_a_trial_out_of_time_is_a_timeout_row_and_a_fresh_worker_takes_the_next(make_pool, ray_cluster):
    stuck, passing = fault("sleep", 16, seconds=600.0), fault("ok", 17)
    seen = []
    pool = make_pool(lambda trial, result: seen.append((trial, result)), trial_timeout_s=2)
    pool.start([stuck, passing], n_workers=1)
    pool.step()  # the worker is up: the stuck trial's 2 s start now
    running = only_running(pool)
    pool.step()  # nothing returns in time
    assert time.monotonic() - running.started >= 2
    ((trial, result),) = seen
    assert trial == stuck and (result.status, result.tries) == ("timeout", 1)
    assert result.error == "timeout: still running after ray.trial_timeout_s=2 s; worker replaced"
    fresh = only_running(pool)
    assert fresh.trial == passing and fresh.actor is not running.actor and fresh.started is None
    assert list(pool.starting.values()) == [fresh.actor]
    assert_dead(ray_cluster, running.actor)
    while pool.in_flight:
        pool.step()
    assert [(trial, result.status) for trial, result in seen[1:]] == [(passing, "ok")]


def test_a_worker_that_dies_is_replaced_and_its_trial_runs_again_first(make_pool, ray_cluster, tmp_path):
    dying, passing = fault("exit", 16, times=1, marker=str(tmp_path)), fault("ok", 17)
    seen = []
    pool = make_pool(lambda trial, result: seen.append((trial, result)), max_attempts=2)
    pool.start([dying, passing], n_workers=1)
    pool.step()  # the worker is up
    first = only_running(pool)
    pool.step()  # its process exits mid-trial
    assert seen == []  # no row yet: the trial runs again
    again = only_running(pool)
    assert (again.trial, again.tries, again.started) == (dying, 2, None)
    assert again.actor is not first.actor and list(pool.starting.values()) == [again.actor]
    assert list(pool.pending) == [(passing, 1)]  # the rerun went before the trial that was waiting
    assert_dead(ray_cluster, first.actor)
    while pool.in_flight:
        pool.step()
    assert [(trial, result.status, result.tries) for trial, result in seen] == [
        (dying, "ok", 2),
        (passing, "ok", 1),
    ]


def test_a_trial_that_kills_every_worker_is_an_error_row_after_max_attempts(make_pool):
    dying = fault("exit")
    seen = []
    pool = make_pool(lambda trial, result: seen.append((trial, result)), max_attempts=2)
    pool.run([dying], n_workers=1)
    ((trial, result),) = seen
    assert trial == dying and (result.status, result.tries) == ("error", 2)
    assert result.error.startswith("worker died while running the trial (2 runs): ")
    assert pool.in_flight == {} and not pool.pending


def test_out_of_memory_is_a_row_and_replaces_the_worker(make_pool, ray_cluster):
    exhausted, passing = fault("oom", 16), fault("ok", 17)
    seen = []
    pool = make_pool(lambda trial, result: seen.append((trial, result)))
    pool.start([exhausted, passing], n_workers=1)
    pool.step()  # the worker is up
    first = only_running(pool)
    pool.step()  # the trial runs out of memory
    ((trial, result),) = seen
    assert trial == exhausted and (result.status, result.tries) == ("oom", 1)
    fresh = only_running(pool)
    assert fresh.trial == passing and fresh.actor is not first.actor and fresh.started is None
    assert list(pool.starting.values()) == [fresh.actor]
    assert_dead(ray_cluster, first.actor)
    while pool.in_flight:
        pool.step()
    assert [(trial, result.status) for trial, result in seen[1:]] == [(passing, "ok")]
