"""Progress of a sweep: a live `rich` bar on a terminal (done/total, failures, ETA), one line per
trial in logs, or nothing."""

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from analysis.schema import PLANNED_STATUSES
from workloads.trial import Trial, TrialResult


def _describe(result: TrialResult) -> str:
    if result.status == "ok" and result.accuracy is not None:  # a trained phase
        pruned = f", {len(result.pruning)} pruning points" if result.pruning else ""
        return f"accuracy {result.accuracy:.3f}, loss {result.loss:.3f}{pruned}"
    if result.status == "ok":
        note = " (interpreted)" if result.interpreted else ""
        return f"{result.latency_ms:.3f} ms{note}, rel_err {result.rel_err:.1e}"
    return (result.error or "").strip().splitlines()[-1][:100] if result.error else ""


class SweepProgress:
    def __init__(self, total: int, mode: str = "auto", title: str = "sweep"):
        self.total, self.done, self.failures = total, 0, 0
        self.console = Console(stderr=True)
        if mode == "auto":
            mode = "bar" if self.console.is_terminal else "lines"
        self.mode = mode
        self._bar = None
        if mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failures: {task.fields[failures]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(title, total=total, failures=0)

    def __enter__(self) -> "SweepProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, trial: Trial, result: TrialResult) -> None:
        self.done += 1
        self.failures += result.status not in PLANNED_STATUSES
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failures=self.failures)
            if result.status not in PLANNED_STATUSES:
                self._bar.console.print(f"[red]{result.status}[/] {trial.label}: {_describe(result)}")
        elif self.mode == "lines":
            print(
                f"[{self.done}/{self.total}] {result.status:<11} {trial.label}  {_describe(result)}",
                file=sys.stderr,
                flush=True,
            )
