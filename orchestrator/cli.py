"""`attnsweep`: run a sweep, show its plan, or report on its results.

Exit codes: 0 done (failed trials included), 1 the orchestrator itself failed, 2 invalid
configuration or usage (one line on stderr naming the key and value, before any work starts).
"""

import argparse
import sys
from pathlib import Path

from orchestrator.config import ConfigError, load_config
from orchestrator.planning import plan_trials

USAGE_ERROR, FAILURE = 2, 1


def _fail(code: int, message: str) -> int:
    print(f"attnsweep: error: {message}", file=sys.stderr)
    return code


def cmd_plan(overrides: list[str]) -> int:
    cfg = load_config(overrides)
    plan = plan_trials(cfg.sweep)
    print(f"sweep {cfg.sweep.name}: {plan.describe()}")
    for trial in plan.trials:
        print(f"  {trial.trial_id}  {trial.label}")
    return 0


def cmd_run(overrides: list[str]) -> int:
    cfg = load_config(overrides)
    plan = plan_trials(cfg.sweep)
    for reason, count in sorted(plan.skipped.items()):
        print(f"attnsweep: skipped {count} point(s): {reason}", file=sys.stderr)
    from orchestrator.executors import ExecutorError
    from orchestrator.sweep import run_sweep

    try:
        outcome = run_sweep(cfg, plan)
    except ExecutorError as exc:
        return _fail(FAILURE, str(exc))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    print(f"sweep {cfg.sweep.name} run {outcome.run_id}: {counts}")
    print(f"results: {outcome.results_path}")
    if outcome.report_path is not None:
        print(f"report:  {outcome.report_path}")
    if outcome.mlflow_run_id is not None:
        print(f"mlflow:  run {outcome.mlflow_run_id} in experiment '{cfg.sweep.name}'")
    return 0


def cmd_report(results: str, out: str | None) -> int:
    from analysis.report import build_report

    path = Path(results)
    if not path.is_dir():
        return _fail(USAGE_ERROR, f"RESULTS={results}: no results dataset there")
    out_dir = Path(out) if out else Path("reports") / path.name
    try:
        paths = build_report(path, out_dir)
    except ValueError as exc:
        return _fail(USAGE_ERROR, f"RESULTS={results}: {exc}")
    print(f"report: {paths.html}\nsummary: {paths.markdown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep: attnsweep run [sweep=NAME] [KEY=VALUE ...]")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep.axes.seq_len=[512,1024]")
    plan = sub.add_parser("plan", help="list the trials a sweep would run, without running them")
    plan.add_argument("overrides", nargs="*")
    report = sub.add_parser("report", help="write index.html and summary.md for a results dataset")
    report.add_argument("results", help="a sweep's dataset directory, e.g. results/smoke")
    report.add_argument("--out", help="output directory (default: reports/<sweep>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args.overrides)
        if args.command == "plan":
            return cmd_plan(args.overrides)
        return cmd_report(args.results, args.out)
    except ConfigError as exc:
        return _fail(USAGE_ERROR, str(exc))
    except KeyboardInterrupt:
        return _fail(130, "interrupted; results written so far are kept")


if __name__ == "__main__":
    sys.exit(main())
