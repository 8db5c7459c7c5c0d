"""`attnsweep`: run a sweep, show its plan, or report on its results.

Exit codes: 0 done (failed trials included), 1 the orchestrator itself failed, 2 invalid
configuration or usage (one line on stderr naming the key and value, before any work starts),
3 `compare` flagged a regression.
"""

import argparse
import dataclasses
import signal
import sys
import typing
from importlib.resources import files
from pathlib import Path

import yaml

from analysis.baseline import DEFAULT_BASELINE, Baseline, BaselineError
from orchestrator.config import Config, ConfigError, load_config
from orchestrator.executors import ExecutorError, fix_cublas_workspace
from orchestrator.messages import first_line
from orchestrator.planning import plan_to_run, plan_trials

# The modules only one command uses are imported in that command's function: the CLI starts fast,
# and no command needs another's packages (pandas to read results, rich for `run`'s progress bar,
# matplotlib, which the GPU host lacks, for `report` and `compare`).

USAGE_ERROR, FAILURE = 2, 1
REGRESSION_FLAGGED = 3


def _fail(code: int, message: str) -> int:
    print(f"attnsweep: error: {message}", file=sys.stderr)
    return code


def cmd_plan(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> int:
    cfg = load_config(overrides, sweep_dirs)
    plan = plan_trials(cfg.sweep)
    print(f"sweep {cfg.sweep.name}: {plan.describe()}")
    for trial in plan.trials:
        print(f"  {trial.trial_id}  {trial.label}")
    return 0


def cmd_run(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> int:
    cfg = load_config(overrides, sweep_dirs)
    plan = plan_to_run(cfg.sweep, cfg.max_trials)
    for reason, count in sorted(plan.skipped.items()):
        print(f"attnsweep: skipped {count} point(s): {reason}", file=sys.stderr)
    from analysis.store import StoreBusy
    from orchestrator.sweep import run_sweep

    try:
        outcome = run_sweep(cfg, plan)
    except (ExecutorError, StoreBusy) as exc:
        return _fail(FAILURE, str(exc))
    if outcome.already_done:
        print(
            f"attnsweep: {outcome.already_done} of {len(plan.trials)} trials already done in "
            f"{outcome.results_path} (resume=false measures everything again)",
            file=sys.stderr,
        )
    if not outcome.run_id:
        print(f"sweep {cfg.sweep.name}: nothing to run")
        if outcome.report_path is not None:
            print(f"report:  {outcome.report_path}")
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    print(f"sweep {cfg.sweep.name} run {outcome.run_id}: {counts}")
    print(f"results: {outcome.results_path}")
    if outcome.report_path is not None:
        print(f"report:  {outcome.report_path}")
    if outcome.mlflow_run_id is not None:
        print(f"mlflow:  run {outcome.mlflow_run_id} in experiment '{cfg.sweep.name}'")
    return 0


class Key(typing.NamedTuple):
    """One line of `attnsweep keys`, every field as printed."""

    name: str  # dotted, as in an override: sweep.axes.seq_len
    type: str
    default: str
    help: str


def render(value: typing.Any) -> str:
    """A value as an override spells it: null, true, [1, 2], ""."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(render(item) for item in value) + "]"
    return str(value) if value != "" else '""'


def _type_name(hint: typing.Any) -> str:
    name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    return name.replace("None", "null")


def default_sweep() -> str:
    """The sweep a run gets without `sweep=NAME`: the choice in Hydra's defaults list (config.yaml)."""
    defaults = yaml.safe_load((files("orchestrator.conf") / "config.yaml").read_text())["defaults"]
    return next(entry["sweep"] for entry in defaults if isinstance(entry, dict) and "sweep" in entry)


def config_keys(expand_open_dicts: bool = True) -> list[Key]:
    """Every key of the config, read from its dataclasses in their order. An open dict (sweep.params,
    sweep.quality.task_params) is one pattern line, then with `expand_open_dicts` one line per
    parameter of every variant (task), at its default."""
    group = (
        "which grid: orchestrator/conf/sweep/<name>.yaml (or in DIR/sweep/ with --sweeps DIR); "
        "its values replace the sweep.* defaults"
    )
    return [Key("sweep", "str", default_sweep(), group), *_section_keys(Config, "", expand_open_dicts)]


def _section_keys(section: type, prefix: str, expand_open_dicts: bool) -> list[Key]:
    hints = typing.get_type_hints(section)
    keys = []
    for f in dataclasses.fields(section):
        name, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _section_keys(hint, f"{name}.", expand_open_dicts)
        elif "entry" in f.metadata:  # an open dict: {variant or task: {parameter: default}}
            entry = f.metadata["entry"]
            keys.append(Key(f"{name}.<{entry}>.<key>", "any", f"the {entry}'s", f.metadata["help"]))
            if expand_open_dicts:
                keys += [
                    Key(
                        f"{name}.{owner}.{key}",
                        type(value).__name__,
                        render(value),
                        f"parameter of {entry} {owner}",
                    )
                    for owner, values in f.default_factory().items()
                    for key, value in values.items()
                ]
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            keys.append(Key(name, _type_name(hint), render(default), f.metadata["help"]))
    return keys


def keys_text(keys: list[Key]) -> str:
    rows = [Key("KEY", "TYPE", "DEFAULT", "MEANING"), *keys]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row.help
        for row in rows
    )


def keys_markdown(keys: list[Key]) -> str:
    """README's key tables. A pattern line's default is words, every other default a value (code)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "\\<")

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys:
        default = key.default if "<" in key.name else f"`{key.default}`"
        lines.append(f"| `{key.name}` | {cell(key.type)} | {cell(default)} | {cell(key.help)} |")
    return "\n".join(lines)


def cmd_keys(prefix: str, markdown: bool) -> int:
    keys = [
        key
        for key in config_keys(expand_open_dicts=not markdown)
        if not prefix or key.name == prefix or key.name.startswith(f"{prefix}.")
    ]
    if not keys:
        return _fail(USAGE_ERROR, f"keys {prefix}: no such key (`attnsweep keys` lists them all)")
    print(keys_markdown(keys) if markdown else keys_text(keys))
    return 0


def cmd_report(results: str, out: str | None, baseline: str = DEFAULT_BASELINE) -> int:
    from analysis.report import build_report
    from analysis.store import dataset_exists, dataset_name

    try:
        Baseline.parse(baseline)
    except ValueError as exc:
        return _fail(USAGE_ERROR, f"--baseline={baseline}: {exc}")
    try:
        if not dataset_exists(results):
            return _fail(USAGE_ERROR, f"RESULTS={results}: no results dataset there")
        out_dir = Path(out) if out else Path("reports") / dataset_name(results)
        paths = build_report(results, out_dir, baseline=baseline)
    except BaselineError as exc:  # a baseline the dataset has no row of: nothing written
        return _fail(USAGE_ERROR, f"--baseline={baseline}: {exc}")
    except ValueError as exc:  # an unsupported URI, or no rows to report
        return _fail(USAGE_ERROR, f"RESULTS={results}: {exc}")
    except OSError as exc:  # an object store that cannot be reached or read
        return _fail(FAILURE, f"RESULTS={results}: {first_line(exc)}")
    print(f"report: {paths.html}\nsummary: {paths.markdown}")
    return 0


def cmd_sync(results: str, tracking_uri: str | None) -> int:
    from orchestrator.sync import SyncError, sync

    try:
        outcome = sync(results, tracking_uri)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(USAGE_ERROR, f"RESULTS={results}: {exc}")
    except SyncError as exc:
        return _fail(FAILURE, str(exc))
    except OSError as exc:  # an object store that cannot be reached or read
        return _fail(FAILURE, f"RESULTS={results}: {first_line(exc)}")
    print(f"synced {outcome.synced} rows to MLflow ({outcome.already} already there) at {outcome.uri}")
    return 0


def cmd_compare(base: str, new: str, out: str | None, threshold: str, metric: str) -> int:
    from analysis.compare import CompareError
    from analysis.compare_report import write_comparison

    try:
        output = write_comparison(base, new, out, metric=metric, threshold=threshold)
    except CompareError as exc:
        return _fail(USAGE_ERROR, str(exc))
    print(output.text)
    return REGRESSION_FLAGGED if len(output.comparison.flagged) else 0


def cmd_submit(overrides: list[str], address: str | None, wait: bool) -> int:
    from orchestrator.jobs import JobsError, submit_sweep

    try:
        return submit_sweep(overrides, address, wait)
    except JobsError as exc:
        return _fail(FAILURE, str(exc))


def cmd_jobs(action: str, job_id: str | None, address: str | None, follow: bool) -> int:
    from orchestrator.jobs import JobsError, manage_jobs

    try:
        return manage_jobs(action, job_id, address, follow)
    except JobsError as exc:
        return _fail(FAILURE, str(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep: attnsweep run [sweep=NAME] [KEY=VALUE ...]")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep.axes.seq_len=[512,1024]")
    plan = sub.add_parser("plan", help="list the trials a sweep would run, without running them")
    plan.add_argument("overrides", nargs="*")
    for command in (run, plan):
        command.add_argument(
            "--sweeps", action="append", default=[], metavar="DIR", help="also look for DIR/sweep/NAME.yaml"
        )
    keys = sub.add_parser("keys", help="list every configuration key: type, default and meaning")
    keys.add_argument(
        "prefix", nargs="?", default="", help="only this key or section, e.g. ray, sweep.quality"
    )
    keys.add_argument(
        "--markdown", action="store_true", help="as README's tables (open dicts as patterns, not expanded)"
    )
    report = sub.add_parser("report", help="write index.html and summary.md for a results dataset")
    report.add_argument("results", help="a sweep's dataset: results/smoke, s3://bucket/prefix/smoke")
    report.add_argument("--out", help="output directory (default: reports/<sweep>)")
    report.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        metavar="best|VARIANT/BACKEND",
        help=(
            "what speedups are measured against: best (default: at each point the fastest PyTorch "
            "kernel of mha, else of the row's own variant) or e.g. mha/torch-sdpa"
        ),
    )
    sync = sub.add_parser("sync", help="log to MLflow the rows of a results dataset that it lacks")
    sync.add_argument("results", help="a sweep's dataset: results/smoke, s3://bucket/prefix/smoke")
    sync.add_argument(
        "--tracking-uri", help="MLflow store (default: as `run`: MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    compare = sub.add_parser(
        "compare", help="compare two results datasets point by point; exit 3 when it flags a regression"
    )
    for side in ("base", "new"):
        compare.add_argument(
            side, metavar=side.upper(), help="a dataset dir (results/smoke) or one run: DIR@RUN_ID"
        )
    compare.add_argument("--threshold", default="0.05", help="slowdown that counts (fraction, default 0.05)")
    compare.add_argument("--metric", default="latency_ms", help="latency_ms (default) or compile_ms")
    compare.add_argument("--out", help="output directory (default: reports/compare-<base>-vs-<new>)")
    address_help = "the cluster's job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)"
    submit = sub.add_parser("submit", help="run a sweep as a Ray Job on a cluster (see cluster/README.md)")
    submit.add_argument(
        "overrides", nargs="*", help="as for run; results_dir: absolute on the cluster, or s3://..."
    )
    submit.add_argument("--address", help=address_help)
    submit.add_argument("--wait", action="store_true", help="stream the job's logs; exit 0 when it succeeds")
    jobs = sub.add_parser("jobs", help="list the sweeps submitted to a cluster, show their logs, stop them")
    jobs.add_argument("action", nargs="?", default="list", choices=["list", "logs", "stop", "delete"])
    jobs.add_argument("job_id", nargs="?", metavar="ID", help="a submission id (from `attnsweep jobs`)")
    jobs.add_argument("--address", help=address_help)
    jobs.add_argument("--follow", action="store_true", help="logs: stream them until the job ends")
    return parser


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """SIGTERM (kill, timeout, scancel, a container's stop) ends a command as Ctrl-C does: a run
    writes the rows it holds and compacts its file before exiting 130. SIGINT is restored where the
    process inherited it ignored (a background job of a script), so `kill -INT` stops it too."""
    signal.signal(signal.SIGTERM, _interrupted)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    # First: a local run's trials start CUDA in this process (executor=local, or Ray workers that
    # inherit this environment), after which cuBLAS no longer reads its workspace setting.
    fix_cublas_workspace()
    stop_on_signals()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args.overrides, tuple(args.sweeps))
        if args.command == "plan":
            return cmd_plan(args.overrides, tuple(args.sweeps))
        if args.command == "keys":
            return cmd_keys(args.prefix, args.markdown)
        if args.command == "sync":
            return cmd_sync(args.results, args.tracking_uri)
        if args.command == "compare":
            return cmd_compare(args.base, args.new, args.out, args.threshold, args.metric)
        if args.command == "submit":
            return cmd_submit(args.overrides, args.address, args.wait)
        if args.command == "jobs":
            return cmd_jobs(args.action, args.job_id, args.address, args.follow)
        return cmd_report(args.results, args.out, args.baseline)
    except ConfigError as exc:
        return _fail(USAGE_ERROR, str(exc))
    except KeyboardInterrupt:
        return _fail(130, "interrupted; results written so far are kept")


if __name__ == "__main__":
    sys.exit(main())
