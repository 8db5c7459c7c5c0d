"""`attnsweep compare BASE NEW`: one sweep measured twice (two commits, two machines), point by point.

Sources. BASE and NEW are results datasets (`results/smoke`), or one run of a dataset written
`DIR@RUN_ID` (`results/smoke@run-20250301-a1b2`); a directory whose own name holds '@' is taken whole.

Matching. Each side keeps one row per point by the report's selection rule (its latest ok row, else its
latest row; `analysis.rows.latest_per_trial`), keyed by the configuration columns (`CONFIG_COLUMNS`).
trial_id hashes the same configuration, but matching on the columns still works when two commits
hash differently; run_id, code_version, device and timestamp describe a run, not a point, so they
never stand in the way of a match. Points on one side only are listed as unmatched.

Regression rule. At a matched point where both rows are ok and have the metric (> 0): b and n are the
BASE and NEW values (for latency: the medians), [b20, b80] and [n20, n80] their p20–p80 spreads (a
metric without a measured spread, or a missing quantile, uses the value itself), ratio = n / b, and t
the threshold (default 0.05):
- regression (flagged): ratio > 1 + t and n20 > b80 — slower by more than t, and even NEW's fast runs
  are slower than BASE's slow runs (the two p20–p80 ranges do not overlap);
- improvement (reported, never flagged): ratio < 1 / (1 + t) and n80 < b20 — the same rule with BASE
  and NEW swapped;
- within spread: the change exceeds t but the ranges overlap; within threshold: the rest.
A point ok in BASE that fails in NEW (error, oom, timeout) is flagged too: a kernel that stopped
working is a regression no ratio shows. Per variant, backend and phase the ratios are summarised by
their geometric mean. Rows Triton ran in its CPU interpreter carry no meaningful time: for the timed
metrics (latency_ms, compile_ms) a point interpreted on either side is left out of the ratios.

This module is the comparison itself (sources, matching, the rule, the per-group summary); the page,
the Markdown summary and the stdout text are `analysis.compare_report`'s. Reads Parquet or DataFrames
only (no torch, no triton) and never writes into the datasets it reads.
"""

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.rows import latest_per_trial, load_results
from analysis.schema import CONFIG_COLUMNS, FAILED_STATUSES
from analysis.store import read_results

REGRESSION, NOW_FAILING = "regression", "now failing"
IMPROVEMENT, WITHIN_SPREAD, WITHIN_THRESHOLD = "improvement", "within spread", "within threshold"
INTERPRETED, NO_VALUE, NOT_OK = "interpreted", "no value", "not ok on a side"
FLAGGED = (REGRESSION, NOW_FAILING)
MEASURED = (REGRESSION, IMPROVEMENT, WITHIN_SPREAD, WITHIN_THRESHOLD)  # the verdicts with a ratio
VERDICTS = (NOW_FAILING, *MEASURED, INTERPRETED, NO_VALUE, NOT_OK)
# metric -> the columns of its p20 and p80 (None: no measured spread). Both are lower-is-better times,
# so a ratio > 1 is always worse and interpreted rows never count.
METRICS = {"latency_ms": ("latency_ms_p20", "latency_ms_p80"), "compile_ms": None}


class CompareError(ValueError):
    """Bad input to compare: the message is the one line the CLI prints."""


@dataclass(frozen=True)
class Source:
    """A dataset directory, or one run of it."""

    path: Path
    run_id: str | None = None

    @property
    def label(self) -> str:
        """Short, for the default output directory: the dataset's own name."""
        return self.path.resolve().name + (f"@{self.run_id}" if self.run_id else "")

    def __str__(self) -> str:
        return str(self.path) + (f"@{self.run_id}" if self.run_id else "")


@dataclass(frozen=True)
class Comparison:
    base: dict[str, str]  # what each side is, for the header: label, runs, code version, device, rows
    new: dict[str, str]
    metric: str
    threshold: float
    points: pd.DataFrame  # one row per matched point: config, both statuses and values, ratio, verdict
    base_only: pd.DataFrame  # the kept rows of the points NEW lacks
    new_only: pd.DataFrame

    @property
    def flagged(self) -> pd.DataFrame:
        return self.points[self.points["verdict"].isin(FLAGGED)]

    @property
    def groups(self) -> pd.DataFrame:
        return summarise_groups(self.points)


def parse_source(spec: str, role: str) -> Source:
    path = Path(spec)
    run_id = None
    if "@" in spec and not path.is_dir():
        directory, run_id = spec.rsplit("@", 1)
        path = Path(directory)
    if not path.is_dir():
        raise CompareError(f"{role}={spec}: no results dataset at {path}")
    return Source(path, run_id)


def parse_threshold(value: str | float) -> float:
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold) or threshold < 0:
        raise CompareError(f"--threshold={value}: expected a fraction >= 0, e.g. 0.05 for 5%")
    return threshold


def parse_metric(name: str) -> str:
    if name not in METRICS:
        raise CompareError(f"--metric={name}: unknown metric (known: {', '.join(METRICS)})")
    return name


def load_source(source: Source, role: str) -> pd.DataFrame:
    try:
        rows = read_results(source.path, source.run_id)
    except (OSError, pa.ArrowException) as exc:
        raise CompareError(f"{role}={source.path}: cannot read it as a results dataset ({exc})") from None
    if rows.empty and source.run_id is not None:
        runs = ", ".join(sorted(read_results(source.path)["run_id"].dropna().unique())) or "none"
        raise CompareError(f"{role}={source.path}@{source.run_id}: no such run (runs there: {runs})")
    if rows.empty:
        raise CompareError(f"{role}={source.path}: no result rows there")
    return load_results(rows)


def _key_part(value: object) -> object:
    """One spelling per value: a column with nulls reads as float, so 1024.0 must equal 1024."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    return value


def point_keys(df: pd.DataFrame) -> pd.Series:
    config = df[list(CONFIG_COLUMNS)].astype(object)
    return config.apply(lambda r: repr(tuple(_key_part(v) for v in r)), axis=1)


def one_row_per_point(df: pd.DataFrame) -> pd.DataFrame:
    """The report's selection rule, keyed by configuration instead of trial_id; indexed by that key."""
    keys = point_keys(df)
    kept = latest_per_trial(df.assign(trial_id=keys))
    return kept.assign(trial_id=df.loc[kept.index, "trial_id"]).set_index(keys.loc[kept.index])


def verdict(b: float, b20: float, b80: float, n: float, n20: float, n80: float, threshold: float) -> str:
    """The regression rule of the module docstring for one point's two measurements."""
    ratio = n / b
    slower, faster = ratio > 1 + threshold, ratio < 1 / (1 + threshold)
    if slower and n20 > b80:
        return REGRESSION
    if faster and n80 < b20:
        return IMPROVEMENT
    return WITHIN_SPREAD if slower or faster else WITHIN_THRESHOLD


def _measure(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    value = pd.to_numeric(rows[metric], errors="coerce")
    low, high = METRICS[metric] or (metric, metric)
    quantiles = {
        q: pd.to_numeric(rows[c], errors="coerce").fillna(value) for q, c in (("p20", low), ("p80", high))
    }
    return pd.DataFrame({"value": value, **quantiles})


def _classify(p: pd.Series, threshold: float) -> str:
    if p["base_status"] != "ok" or p["new_status"] != "ok":
        return NOW_FAILING if p["base_status"] == "ok" and p["new_status"] in FAILED_STATUSES else NOT_OK
    if p["base_interpreted"] or p["new_interpreted"]:
        return INTERPRETED
    if not (p["base_value"] > 0 and p["new_value"] > 0):  # NaN (no value) fails this too
        return NO_VALUE
    measured = [p[f"{side}_{q}"] for side in ("base", "new") for q in ("value", "p20", "p80")]
    return verdict(*measured, threshold)


def describe(df: pd.DataFrame, kept: pd.DataFrame, label: str) -> dict[str, str]:
    def distinct(column: str) -> str:
        return ", ".join(sorted(map(str, df[column].dropna().unique()))) or "—"

    return {
        "dataset": label,
        "runs": distinct("run_id"),
        "code version": distinct("code_version"),
        "device": distinct("device"),
        "rows (points kept)": f"{len(df)} ({len(kept)})",
    }


def compare_frames(
    base: pd.DataFrame, new: pd.DataFrame, *, metric="latency_ms", threshold=0.05, labels=("BASE", "NEW")
) -> Comparison:
    """Match two sets of result rows point by point and classify each matched point (module docstring);
    `labels` name BASE and NEW in the outputs."""
    metric, threshold = parse_metric(metric), parse_threshold(threshold)
    base, new = load_results(base), load_results(new)
    b, n = one_row_per_point(base), one_row_per_point(new)
    shared = b.index[b.index.isin(n.index)]
    if shared.empty:
        raise CompareError(
            f"{labels[0]} and {labels[1]} have no point in common (no equal configuration): "
            "compare two runs of the same sweep"
        )
    points = b.loc[shared, list(CONFIG_COLUMNS)].copy()
    for side, rows in (("base", b.loc[shared]), ("new", n.loc[shared])):
        points[f"{side}_status"] = rows["status"]
        points[f"{side}_error"] = rows["error"]
        points[f"{side}_interpreted"] = rows["interpreted"]
        for column, values in _measure(rows, metric).items():
            points[f"{side}_{column}"] = values
    points["verdict"] = points.apply(_classify, axis=1, args=(threshold,))
    points["ratio"] = (points["new_value"] / points["base_value"]).where(points["verdict"].isin(MEASURED))
    return Comparison(
        base=describe(base, b, labels[0]),
        new=describe(new, n, labels[1]),
        metric=metric,
        threshold=threshold,
        points=points.reset_index(drop=True),
        base_only=b[~b.index.isin(n.index)].reset_index(drop=True),
        new_only=n[~n.index.isin(b.index)].reset_index(drop=True),
    )


def summarise_groups(points: pd.DataFrame) -> pd.DataFrame:
    """Per phase, variant and backend: geometric mean, min and max of the ratios; verdict counts."""
    marked = points.assign(
        log_ratio=np.log(points["ratio"]),
        flagged=points["verdict"].isin(FLAGGED),
        improved=points["verdict"].eq(IMPROVEMENT),
        no_ratio=points["ratio"].isna(),
    )
    groups = marked.groupby(["phase", "variant", "backend"], dropna=False).agg(
        points=("ratio", "count"),
        geomean=("log_ratio", "mean"),
        min=("ratio", "min"),
        max=("ratio", "max"),
        flagged=("flagged", "sum"),
        improvements=("improved", "sum"),
        no_ratio=("no_ratio", "sum"),
    )
    groups["geomean"] = np.exp(groups["geomean"])
    groups = groups.sort_values(["flagged", "geomean"], ascending=False, kind="stable")
    return groups.reset_index()
