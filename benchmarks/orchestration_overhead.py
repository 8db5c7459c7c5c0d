"""What orchestration costs per trial: the same N no-op trials through (a) bare Ray, (b) Ray Tune's grid
search and (c) the full attnsweep pipeline (Ray executor, Parquet store, MLflow tracking), in one run.

    python benchmarks/orchestration_overhead.py                # N=500, paths a,b,c, results kept
    python benchmarks/orchestration_overhead.py --quick        # N=20, nothing written (a check)
    python benchmarks/orchestration_overhead.py --paths a,t,b,x,c-,c --repeat 3   # where (c)'s time goes

The trial is the same in every path: `workloads.runner.run_trial(trial, settings)` of a trial of the
test-only variant `test-fault` (tests/fault_variant.py) with action ok, which returns its input: the
torch-ref prefill of batch 1, 1 head of dim 8, float32, with `seq_len` = 1..N so that the N trials
(and their trial_ids) differ. The trial list and the settings come from one config: `plan_trials` and
its `measure` node (`min_run_time_s=0.001`, `check_accuracy=true` as in the pipeline), so the trial
costs little beside what run_trial always does. The variant reaches every Ray worker through
ATTNSWEEP_PLUGINS and PYTHONPATH, set here before anything imports the registry or starts Ray. Every
path runs it in a process set up as attnsweep sets up its actors: `orchestrator.executors.TrialWorker`
(torch at 1 thread, the imports frozen out of the garbage collector), so a change there reaches all.

    (a)  bare Ray: 2 TrialWorker actors of 1 CPU (attnsweep's default CPU layout), the N trials
         submitted round-robin up front, `ray.get` of all the results; nothing is stored.
    (t)  bare Ray tasks, as the issue words it: one 1-CPU task per trial, all submitted up front; a
         worker process's first task sets it up as an actor is set up, later ones reuse that.
    (b)  Ray Tune: `tune.Tuner` over `grid_search` of the trial index, a function trainable that runs
         the trial through a TrialWorker and reports one metric, 1 CPU per trial,
         max_concurrent_trials=2, reuse_actors=True (Tune's best case: without it every trial starts
         a process), verbose=0, no checkpoints, TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 (no CSV, JSON or
         TensorBoard files per trial), storage in a temp dir.
    (c)  attnsweep: `run_sweep(cfg)` with executor=ray (2 CPU actors), the Parquet store in a temp
         results_dir, MLflow on against a SQLite store in a temp dir, report=false (the report is not
         orchestration), progress=off, resume=false. It returns once the MLflow queue is drained, the
         parent run closed with the dataset attached, and the parts compacted: all of that is timed.
    (c-) the same with tracking.enabled=false: what MLflow costs is (c) - (c-).
    (x)  attnsweep's `RayExecutor` alone, its on_result only counting: its dispatch (one trial in
         flight per actor, the next sent when one returns) against (a); (c-) - (x) is then the Parquet
         store and the sweep's own bookkeeping.

Timing: one Ray instance (`ray.init(num_cpus=2)` with the options attnsweep passes) is started and
warmed up first, untimed; run_sweep joins it (orchestrator/executors.py `_connect` returns at
`ray.is_initialized()`, and the executor shuts down only an instance it started). Every path is
timed from the same point: trials planned, config loaded, modules imported, and every CPU of the
instance free (the previous path's actors and Tune's placement groups are released asynchronously,
seconds after it returns; the script waits for that, untimed). Each path starts its own actors, so
all pay the same worker start-up and imports. The MLflow store is created (schema migrations) before
the clock: a sweep pays that once per store, not per run; its time is printed apart. Afterwards,
untimed, each path's results are checked: N trials ok; in (c) N Parquet rows in one compacted file
and N MLflow child runs under the parent.

Per path the table gives the wall time (median over --repeat runs, interleaved a b c a b c so that
a change of the machine's load falls on all), per trial, against (a), the driver process's CPU time
per trial (process_time: its every thread, Ray's and the MLflow logger's included), the machine's
idle share over the run (/proc/stat) and the load average before each run. The last line is

    overhead_ratio_vs_ray=<c/a> overhead_ratio_vs_tune=<c/b> per_trial_ms=<c wall / N in ms>

and, unless --quick or --no-save, the table and a JSON record (every run) go to
benchmarks/results/<device>/orchestration_overhead-n<N>-<time>.{md,json}.
"""

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Before the variant registry is imported and before Ray starts: Ray's workers inherit both.
os.environ["ATTNSWEEP_PLUGINS"] = "tests.fault_variant"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
sys.path.insert(0, str(ROOT))


import ray  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

from analysis.store import read_results  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.executors import RayExecutor, TrialWorker  # noqa: E402
from orchestrator.planning import plan_trials  # noqa: E402
from orchestrator.sweep import run_sweep  # noqa: E402
from orchestrator.tracking import make_client  # noqa: E402
from workloads.environment import code_version  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = {
    "a": "(a) bare Ray, 2 actors",
    "t": "(t) bare Ray tasks",
    "b": "(b) Ray Tune grid search",
    "x": "(x) attnsweep's RayExecutor alone",
    "c": "(c) attnsweep: Ray + Parquet + MLflow",
    "c-": "(c-) attnsweep without MLflow",
}
WORKERS = 2


def sweep_overrides(n: int, results_dir: str, tracking_uri: str | None) -> list[str]:
    """The config of the N no-op trials; (a) and (b) run the trials it plans, (c) runs it."""
    return [
        "sweep.name=overhead",
        "sweep.variants=[test-fault]",
        "sweep.backends=[torch-ref]",
        "sweep.phases=[prefill]",
        f"sweep.axes.seq_len=[{','.join(str(i) for i in range(1, n + 1))}]",
        "sweep.axes.batch=[1]",
        "sweep.axes.n_heads=[1]",
        "sweep.axes.n_kv_heads=[1]",
        "sweep.axes.head_dim=[8]",
        "sweep.axes.dtype=[float32]",
        "measure.min_run_time_s=0.001",
        "measure.check_accuracy=true",
        "executor=ray",
        f"ray.cpu_workers={WORKERS}",
        "ray.cpus_per_worker=1",
        f"results_dir={results_dir}",
        f"tracking.enabled={'true' if tracking_uri else 'false'}",
        *([f"tracking.uri={tracking_uri}"] if tracking_uri else []),
        "report=false",
        "progress=off",
        "resume=false",
        f"max_trials={max(n, 2000)}",
    ]


def ray_options() -> dict:
    """What orchestrator/executors.py `_connect` passes to ray.init for a local instance."""
    return {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}


# --- (a) bare Ray ---------------------------------------------------------------------------------


class BareWorker(TrialWorker):
    """attnsweep's trial actor, set up as attnsweep sets it up (torch threads, the imports frozen out of
    the garbage collector), returning only the status and the time run_trial took."""

    def run(self, trial):
        start = time.perf_counter()
        result = super().run(trial)
        return result.status, time.perf_counter() - start


def bare_ray(trials, settings, scratch: Path) -> dict:
    actor_class = ray.remote(num_cpus=1)(BareWorker)
    actors = [actor_class.remote(settings, 1) for _ in range(WORKERS)]
    refs = [actors[i % WORKERS].run.remote(trial) for i, trial in enumerate(trials)]
    results = ray.get(refs)
    for actor in actors:
        ray.kill(actor)
    seconds = sorted(s for _, s in results)
    return {
        "ok": sum(status == "ok" for status, _ in results),
        "trial_ms_median": 1e3 * seconds[len(seconds) // 2],
        "trial_ms_mean": 1e3 * sum(seconds) / len(seconds),
    }


def run_as_task(trial, settings):
    """A Ray task of 1 CPU: the process's first task sets it up as an actor is set up (Ray keeps the
    deserialised function, its globals included, in the worker: the set-up is made once per process)."""
    global TASK_WORKER
    if TASK_WORKER is None:
        TASK_WORKER = BareWorker(settings, 1)
    return TASK_WORKER.run(trial)


TASK_WORKER = None


def bare_tasks(trials, settings, scratch: Path) -> dict:
    task = ray.remote(num_cpus=1)(run_as_task)
    results = ray.get([task.remote(trial, settings) for trial in trials])
    seconds = sorted(s for _, s in results)
    return {
        "ok": sum(status == "ok" for status, _ in results),
        "trial_ms_median": 1e3 * seconds[len(seconds) // 2],
        "trial_ms_mean": 1e3 * sum(seconds) / len(seconds),
    }


# --- (b) Ray Tune ---------------------------------------------------------------------------------


def tune_trainable(config, trials, settings):
    # The set-up of attnsweep's actors (the first call of a process imports and freezes; later ones
    # find the imports done and little to freeze), then the trial as the actors run it.
    worker = TrialWorker(settings, 1)
    result = worker.run(trials[config["index"]])
    tune.report({"ok": int(result.status == "ok")})


def ray_tune(trials, settings, scratch: Path) -> dict:
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, trials=trials, settings=settings), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(len(trials))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=WORKERS, reuse_actors=True),
        run_config=tune.RunConfig(
            name="overhead",
            storage_path=str(scratch / "tune"),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0, checkpoint_at_end=False),
            log_to_file=False,
        ),
    )
    grid = tuner.fit()
    return {"ok": sum(r.error is None and r.metrics.get("ok") == 1 for r in grid), "errors": grid.num_errors}


# --- (x) attnsweep's executor alone ------------------------------------------------------------------


def executor_alone(cfg):
    """orchestrator.executors.RayExecutor with an on_result that only counts: its dispatch (one trial
    in flight per actor, the next sent when one returns) without the store, tracking or progress."""

    def run(trials, settings, scratch: Path) -> dict:
        counts = {"ok": 0}

        def on_result(trial, result) -> None:
            counts["ok"] += result.status == "ok"

        with RayExecutor(cfg.ray) as executor:
            executor.run(trials, settings, on_result)
        return counts

    return run


# --- (c) attnsweep --------------------------------------------------------------------------------


def attnsweep(cfg):
    def run(trials, settings, scratch: Path) -> dict:
        outcome = run_sweep(cfg)
        return {"ok": outcome.counts.get("ok", 0), "outcome": outcome}

    return run


def check_attnsweep(info: dict, n: int, tracking_uri: str | None) -> None:
    """Outside the clock: N rows in Parquet, one file (compacted), and N MLflow child runs."""
    outcome = info.pop("outcome")
    rows = read_results(outcome.results_path, run_id=outcome.run_id)
    info["parquet_rows"] = len(rows)
    info["parquet_files"] = len(list(Path(outcome.results_path).glob("*.parquet")))
    if tracking_uri:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("overhead")
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{outcome.mlflow_run_id}'",
            max_results=50000,
        )
        info["mlflow_children"] = len(runs)
    problems = [
        f"{key}={info[key]}" for key in ("ok", "parquet_rows", "mlflow_children") if info.get(key, n) != n
    ]
    if info["parquet_files"] != 1:
        problems.append(f"parquet_files={info['parquet_files']}")
    if problems:
        raise SystemExit(f"attnsweep path incomplete: {', '.join(problems)}")


# --- driver ---------------------------------------------------------------------------------------


def warm_up() -> None:
    time.sleep(0.5)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> dict:
    names = ("ray", "mlflow", "pyarrow", "pandas", "torch", "hydra-core")
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in names},
        "code": code_version(str(ROOT)),
    }


def prepare_mlflow(uri: str) -> float:
    """Create the SQLite store (schema migrations), as a store that exists already; seconds taken."""
    start = time.perf_counter()
    make_client(uri).search_experiments()
    return time.perf_counter() - start


def run_paths(paths: list[str], n: int, repeat: int, scratch: Path) -> tuple[list[dict], float | None]:
    """Every path `repeat` times, interleaved (a b c a b c ...) so that a change of the machine's load
    falls on all of them; one record per run."""
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    migrate_s = prepare_mlflow(uri) if "c" in paths else None
    plain = load_config(sweep_overrides(n, str(scratch / "results"), None))
    trials = plan_trials(plain.sweep).trials
    settings = plain.measure
    assert len(trials) == n, f"planned {len(trials)} trials, expected {n}"
    runs = []
    for index, path in enumerate(paths * repeat):
        if path == "a":
            run = bare_ray
        elif path == "t":
            run = bare_tasks
        elif path == "b":
            run = ray_tune
        elif path == "x":
            run = executor_alone(plain)
        else:
            tracking = uri if path == "c" else None
            cfg = load_config(sweep_overrides(n, str(scratch / f"results-{index}"), tracking))
            run = attnsweep(cfg)
        settle()
        before, machine_before = load(), machine_cpu()
        start, driver_before = time.perf_counter(), time.process_time()
        info = run(trials, settings, scratch / f"run-{index}")
        wall, driver_s = time.perf_counter() - start, time.process_time() - driver_before
        busy, idle = (after - first for after, first in zip(machine_cpu(), machine_before, strict=True))
        info["driver_cpu_ms_per_trial"] = 1e3 * driver_s / n
        info["machine_idle_pct"] = 100 * idle / max(busy + idle, 1)
        if path.startswith("c"):
            check_attnsweep(info, n, uri if path == "c" else None)
        elif info["ok"] != n:
            raise SystemExit(f"path {path}: {info['ok']} of {n} trials ok ({info})")
        runs.append({"path": path, "wall_s": wall, "load_before": before, **info})
        print(f"{PATHS[path]}: {wall:.2f} s (load before {before})", flush=True)
    return runs, migrate_s


def settle(timeout_s: float = 120.0) -> None:
    """Wait until every CPU of the instance is free again: the previous path's actors (Tune's
    placement groups too) are released asynchronously, seconds after it returns; a path started
    before would run on one worker for a while."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < WORKERS:
        if time.monotonic() > deadline:
            raise SystemExit(f"Ray's CPUs still busy after {timeout_s:g} s: {ray.available_resources()}")
        time.sleep(0.2)


def machine_cpu() -> tuple[int, int]:
    """(busy, idle) clock ticks of the whole machine since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, idle


def summarise(runs: list[dict], n: int) -> dict[str, dict]:
    """Per path: the median wall time of its runs (and every run's), per trial, and against (a)."""
    summary = {}
    for path in dict.fromkeys(run["path"] for run in runs):
        mine = [run for run in runs if run["path"] == path]
        walls = [run["wall_s"] for run in mine]
        row = {
            "path": path,
            "runs": len(mine),
            "wall_s": statistics.median(walls),
            "walls_s": walls,
            "loads_before": [run["load_before"] for run in mine],
        }
        row["per_trial_ms"] = 1e3 * row["wall_s"] / n
        for key in ("driver_cpu_ms_per_trial", "machine_idle_pct"):
            row[key] = statistics.median(run[key] for run in mine)
        if path == "a":
            row["trial_ms_median"] = statistics.median(run["trial_ms_median"] for run in mine)
            row["trial_ms_mean"] = statistics.median(run["trial_ms_mean"] for run in mine)
        summary[path] = row
    for row in summary.values():
        row["vs_ray"] = row["wall_s"] / summary["a"]["wall_s"] if "a" in summary else None
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500, help="no-op trials per path (default 500)")
    parser.add_argument(
        "--paths", default="a,b,c", help=f"comma-separated, of {','.join(PATHS)} (default a,b,c)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of every path, interleaved (median kept)")
    parser.add_argument("--quick", action="store_true", help="N=20, nothing written: a check")
    parser.add_argument("--no-save", action="store_true", help="print only, write no results")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.trials
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := [p for p in paths if p not in PATHS]:
        parser.error(f"--paths: unknown {unknown} (known: {', '.join(PATHS)})")
    if n < 1 or args.repeat < 1:
        parser.error("--trials and --repeat must be at least 1")

    # Without its loggers (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) Tune warns, per trial, that it cannot
    # read back result.json; the metrics come from memory all the same.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    ray.init(num_cpus=WORKERS, **ray_options())
    # The instance fully up before any clock starts: a first task on each CPU (untimed).
    ray.get([ray.remote(num_cpus=1)(warm_up).remote() for _ in range(WORKERS)])
    try:
        with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
            runs, migrate_s = run_paths(paths, n, args.repeat, Path(tmp))
    finally:
        ray.shutdown()

    summary = summarise(runs, n)
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/orchestration_overhead.py " + " ".join(argv),
        "trials": n,
        "repeat": args.repeat,
        "workers": WORKERS,
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "load_after": load(),
        "mlflow_store_create_s": migrate_s,
        "versions": versions(),
        "summary": list(summary.values()),
        "runs": runs,
        "last_line": last_line(summary),
    }
    print()
    print(plain_table(record))
    if not (args.quick or args.no_save):
        out_dir = RESULTS / device_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"orchestration_overhead-n{n}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        (out_dir / f"{stem}.md").write_text(markdown(record) + "\n")
        (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved {out_dir.relative_to(ROOT)}/{stem}.{{md,json}}")
    print(record["last_line"])
    return 0


def ratio(num: dict | None, den: dict | None) -> str:
    return f"{num['wall_s'] / den['wall_s']:.3f}" if num and den else "n/a"


def last_line(summary: dict[str, dict]) -> str:
    c = summary.get("c")
    per_trial = f"{c['per_trial_ms']:.1f}" if c else "n/a"
    return (
        f"overhead_ratio_vs_ray={ratio(c, summary.get('a'))} "
        f"overhead_ratio_vs_tune={ratio(c, summary.get('b'))} per_trial_ms={per_trial}"
    )


def table(record: dict) -> list[list[str]]:
    median = " (median)" if record["repeat"] > 1 else ""
    lines = [
        [
            "path",
            f"wall s{median}",
            "per-trial ms",
            "vs bare Ray",
            "driver CPU ms/trial",
            "machine idle %",
            "load before (1/5/15 min)",
        ]
    ]
    if record["repeat"] > 1:
        lines[0].insert(2, "every run, s")
    for row in record["summary"]:
        vs = f"{row['vs_ray']:.2f}x" if row["vs_ray"] is not None else "-"
        line = [PATHS[row["path"]], f"{row['wall_s']:.2f}", f"{row['per_trial_ms']:.1f}", vs]
        line += [f"{row['driver_cpu_ms_per_trial']:.1f}", f"{row['machine_idle_pct']:.1f}"]
        line.append("; ".join(row["loads_before"]))
        if record["repeat"] > 1:
            line.insert(2, " ".join(f"{w:.1f}" for w in row["walls_s"]))
        lines.append(line)
    return lines


def notes(record: dict) -> list[str]:
    n, out = record["trials"], []
    a = next((row for row in record["summary"] if row["path"] == "a"), None)
    if a:
        out.append(
            f"run_trial itself, timed inside the (a) workers: median {a['trial_ms_median']:.1f} ms, mean "
            f"{a['trial_ms_mean']:.1f} ms (the first call of a worker includes its imports and the device "
            f"ceilings); {n} trials of the median on {WORKERS} workers: "
            f"{n * a['trial_ms_median'] / 1e3 / WORKERS:.2f} s."
        )
    if record["mlflow_store_create_s"] is not None:
        migrate_s = record["mlflow_store_create_s"]
        out.append(f"MLflow SQLite store created before the clock in {migrate_s:.2f} s.")
    return out


def plain_table(record: dict) -> str:
    lines = table(record)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = [
        f"{record['trials']} no-op trials per path, {WORKERS} workers of 1 CPU, "
        f"{os.cpu_count()} cores ({record['cpu']}), {record['repeat']} run(s) per path"
    ]
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join([*out, *notes(record)])


def markdown(record: dict) -> str:
    lines = table(record)
    md = ["| " + " | ".join(line) + " |" for line in lines]
    md.insert(1, "|" + "|".join("---" for _ in lines[0]) + "|")
    v = record["versions"]
    return "\n".join(
        [
            f"# Orchestration overhead: {record['trials']} no-op trials ({record['cpu']}, "
            f"{record['cpus']} cores)",
            "",
            f"Measured {record['date']} with `{record['command'].strip()}`, code {v['code']}; "
            f"ray {v['ray']}, mlflow {v['mlflow']}, pyarrow {v['pyarrow']}, pandas {v['pandas']}, "
            f"torch {v['torch']}, Python {v['python']}. Load average after: {record['load_after']}.",
            "",
            *md,
            "",
            *notes(record),
            "",
            "    " + record["last_line"],
        ]
    )


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_dir() -> str:
    """This machine's results folder, named as attention_table.py names it (`cpu-amd-epyc`)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", f"CPU: {cpu_name()}").strip("-").lower()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
