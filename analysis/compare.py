"""`attnsweep compare BASE NEW`: one sweep measured twice (two commits, two machines), point by point.

Sources. BASE and NEW are results datasets (`results/smoke`), or one run of a dataset written
`DIR@RUN_ID` (`results/smoke@run-20250301-a1b2`); a directory whose own name holds '@' is taken whole.

Matching. Each side keeps one row per point by the report's selection rule (its latest ok row, else its
latest row; `analysis.report.latest_per_trial`), keyed by the configuration columns (`CONFIG_COLUMNS`).
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

Reads Parquet or DataFrames only (no torch, no triton) and never writes into the datasets it reads.
"""

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value
from analysis.report import _render_html, _render_markdown, error_summary, latest_per_trial, load_results
from analysis.schema import CONFIG_COLUMNS
from analysis.store import read_results

REGRESSION, NOW_FAILING = "regression", "now failing"
IMPROVEMENT, WITHIN_SPREAD, WITHIN_THRESHOLD = "improvement", "within spread", "within threshold"
INTERPRETED, NO_VALUE, NOT_OK = "interpreted", "no value", "not ok on a side"
FLAGGED = (REGRESSION, NOW_FAILING)
MEASURED = (REGRESSION, IMPROVEMENT, WITHIN_SPREAD, WITHIN_THRESHOLD)  # the verdicts with a ratio
VERDICTS = (NOW_FAILING, *MEASURED, INTERPRETED, NO_VALUE, NOT_OK)
FAILED = ("error", "oom", "timeout")
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


@dataclass(frozen=True)
class ComparisonOutput:
    comparison: Comparison
    html: Path
    markdown: Path
    text: str  # the short summary for stdout


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
        return NOW_FAILING if p["base_status"] == "ok" and p["new_status"] in FAILED else NOT_OK
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


def point_label(row: pd.Series) -> str:
    """The point's shape in one line (variant, backend and phase have their own columns)."""
    causal = " causal" if _key_part(row["causal"]) is True else ""
    extras = [f" {k}={axis_value(row[k])}" for k in ("seed", "heads_kept") if _key_part(row[k]) is not None]
    params = "" if axis_value(row["params"]) in ("—", "{}") else f" {row['params']}"
    shape = "B={} N={} H={}/{} d={} {}".format(
        *(axis_value(row[k]) for k in ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim", "dtype"))
    )
    return f"{shape}{causal}{''.join(extras)}{params}"


def change(ratio: float) -> str:
    return "—" if pd.isna(ratio) else f"{round((ratio - 1) * 100, 1) + 0.0:+.1f}%"  # + 0.0: no "-0.0%"


def ratio_cell(ratio: float) -> Cell:
    return Cell("—" if pd.isna(ratio) else f"{ratio:.3f}")


def percent(threshold: float) -> str:
    return f"{threshold * 100:g}%"


def rule_text(metric: str, threshold: float) -> str:
    spread = "NEW's p20 > BASE's p80 (the p20–p80 ranges do not overlap)" if METRICS[metric] else "no spread"
    return (
        f"Metric {metric} (lower is better). A point is flagged when NEW/BASE > {1 + threshold:g} and "
        f"{spread}, or when it was ok in BASE and fails in NEW (error, oom, timeout). An improvement is "
        "the same rule with BASE and NEW swapped: reported, never flagged. 'within spread': the change "
        "exceeds the threshold but the spreads overlap. Each side keeps one row per point (its latest ok "
        "row, else its latest row); points match by their configuration columns."
    )


def headline(c: Comparison) -> str:
    if c.flagged.empty:
        return f"no regression: nothing slower by more than {percent(c.threshold)} beyond the measured spread"
    backends = c.flagged["backend"].value_counts().sort_index()
    by_backend = ", ".join(f"{backend} ({n})" for backend, n in backends.items())
    return f"REGRESSION: {len(c.flagged)} point(s) flagged, by backend: {by_backend}"


def _notes(c: Comparison) -> list[str]:
    counts, notes = c.points["verdict"].value_counts(), []
    if counts.get(INTERPRETED):
        notes.append(
            f"{counts[INTERPRETED]} matched point(s) left out of the ratios: Triton ran in its CPU "
            f"interpreter on a side, so its {c.metric} is not a speed measurement."
        )
    if counts.get(NO_VALUE):
        notes.append(f"{counts[NO_VALUE]} matched point(s) have no {c.metric} on a side.")
    if c.base["device"] != c.new["device"]:
        notes.append("BASE and NEW ran on different devices: the ratios compare the hardware too.")
    return notes


def _table(frame: pd.DataFrame, greyed: pd.Series | None = None) -> Table:
    """A DataFrame as a report table: numbers right-aligned (floats to three digits), text as it is."""
    number = lambda v: Cell(fmt(v) if isinstance(v, float) else str(v))
    table = Table([str(c) for c in frame.columns])
    marks = [False] * len(frame) if greyed is None else list(greyed)
    for row, grey in zip(frame.itertuples(index=False), marks, strict=True):
        table.add([v if isinstance(v, (str, Cell)) else number(v) for v in row], grey)
    return table


def _points_table(points: pd.DataFrame, metric: str) -> Table:
    points = points.sort_values("ratio", ascending=False, na_position="last", kind="stable")

    def measured(side: str) -> list[Cell]:
        ranges = zip(points[f"{side}_value"], points[f"{side}_p20"], points[f"{side}_p80"], strict=True)
        return [Cell(fmt(v), f"{fmt(lo)}–{fmt(hi)}" if METRICS[metric] else "") for v, lo, hi in ranges]

    frame = points[["verdict", "variant", "backend", "phase"]].assign(
        point=[point_label(p) for _, p in points.iterrows()],
        BASE=measured("base"),
        NEW=measured("new"),
        ratio=points["ratio"].map(ratio_cell),
        change=points["ratio"].map(lambda r: Cell(change(r))),
    )
    names = {"BASE": f"BASE {metric}", "NEW": f"NEW {metric}", "ratio": "NEW/BASE"}
    return _table(frame.rename(columns=names), points["verdict"].eq(INTERPRETED))


def _status_table(changed: pd.DataFrame) -> Table:
    errors = zip(changed["new_error"], changed["new_status"], strict=True)
    frame = changed[["variant", "backend", "phase"]].assign(
        point=[point_label(p) for _, p in changed.iterrows()],
        BASE=changed["base_status"],
        NEW=changed["new_status"],
        flagged=changed["verdict"].eq(NOW_FAILING).map({True: "yes", False: ""}),
        error=[error_summary(e, 100) if status != "ok" else "" for e, status in errors],
    )
    return _table(frame.rename(columns={"error": "NEW's error"}))


def _unmatched_blocks(c: Comparison) -> list[Block]:
    rows = pd.concat(
        [c.base_only.assign(only_in="BASE"), c.new_only.assign(only_in="NEW")], ignore_index=True
    )
    blocks = [Block("p", f"{len(c.base_only)} point(s) only in BASE, {len(c.new_only)} only in NEW.")]
    if rows.empty:
        return blocks
    keys = ["only_in", "variant", "backend", "phase"]
    counts = rows.groupby(keys, dropna=False).size().rename("points").reset_index()
    listing = rows[keys].assign(point=[point_label(r) for _, r in rows.iterrows()], status=rows["status"])
    counts, listing = (f.rename(columns={"only_in": "only in"}) for f in (counts, listing))
    return blocks + [Block("table", _table(counts)), Block("table", _table(listing), markdown=False)]


def comparison_blocks(c: Comparison) -> list[Block]:
    """The comparison as report blocks; the Markdown leaves out the full per-point lists."""
    facts = Table(["", "BASE", "NEW"])
    for key in c.base:
        facts.add([key, c.base[key], c.new[key]])
    counts = c.points["verdict"].value_counts()
    verdicts = pd.DataFrame(
        {"verdict": VERDICTS, "matched points": [int(counts.get(v, 0)) for v in VERDICTS]}
    )
    groups = c.groups.assign(**{k: c.groups[k].map(ratio_cell) for k in ("geomean", "min", "max")})
    groups.insert(5, "change", c.groups["geomean"].map(lambda r: Cell(change(r))))
    groups = groups.rename(columns={"geomean": "geomean NEW/BASE", "no_ratio": "no ratio"})
    group_note = (
        "Geometric mean, min and max of NEW/BASE over the points with a ratio; 'no ratio': matched points "
        "left out (interpreted, not ok on a side, no value)."
    )
    regressions = c.points[c.points["verdict"].eq(REGRESSION)]
    improvements = c.points[c.points["verdict"].eq(IMPROVEMENT)]
    changed = c.points[c.points["base_status"] != c.points["new_status"]]
    none = Block("p", "None.")
    return [
        Block("h2", "Summary"),
        Block("p", headline(c)),
        Block("table", facts),
        Block("p", f"Threshold {percent(c.threshold)}. {rule_text(c.metric, c.threshold)}"),
        Block("table", _table(verdicts[verdicts["matched points"] > 0])),
        *(Block("p", note) for note in _notes(c)),
        Block("h2", "By variant, backend and phase"),
        Block("p", group_note),
        Block("table", _table(groups)),
        Block("h2", "Regressions"),
        Block("table", _points_table(regressions, c.metric)) if len(regressions) else none,
        Block("h2", "Improvements"),
        Block("table", _points_table(improvements, c.metric)) if len(improvements) else none,
        Block("h2", "Status changes"),
        Block("table", _status_table(changed)) if len(changed) else none,
        Block("h2", "Unmatched points"),
        *_unmatched_blocks(c),
        Block("h2", "All matched points", markdown=False),
        Block("table", _points_table(c.points, c.metric), markdown=False),
    ]


def summary_text(c: Comparison, limit: int = 10) -> str:
    """The short version for stdout: the groups, then the flagged points by name."""
    interpreted = int(c.points["verdict"].eq(INTERPRETED).sum())
    groups = c.groups[["phase", "variant", "backend", "points", "geomean", "flagged"]].head(2 * limit)
    groups.insert(5, "change", groups["geomean"].map(change))
    lines = [
        f"compare {c.metric} (threshold {percent(c.threshold)}): {c.base['dataset']} -> {c.new['dataset']}",
        f"{len(c.points)} matched points, {int(c.points['ratio'].notna().sum())} with a ratio "
        f"({interpreted} interpreted Triton left out); {len(c.base_only)} only in BASE, "
        f"{len(c.new_only)} only in NEW",
        groups.assign(geomean=groups["geomean"].map(lambda r: ratio_cell(r).text)).to_string(index=False),
        headline(c),
    ]
    for _, p in c.flagged.sort_values("ratio", ascending=False, kind="stable").head(limit).iterrows():
        if p["verdict"] == REGRESSION:
            what = f"{change(p['ratio'])} ({fmt(p['base_value'])} → {fmt(p['new_value'])})"
        else:
            what = f"{p['base_status']} → {p['new_status']}"
        lines.append(f"  {p['verdict']}: {p['variant']} {p['backend']} {p['phase']} {point_label(p)}: {what}")
    if len(c.groups) > 2 * limit or len(c.flagged) > limit:
        lines.append("(more in the HTML)")
    return "\n".join(lines)


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def write_comparison(
    base: str, new: str, out_dir: str | Path | None = None, *, metric: str = "latency_ms", threshold=0.05
) -> ComparisonOutput:
    """Compare two datasets (`DIR` or `DIR@RUN_ID`) and write `index.html` and `summary.md` into
    `out_dir` (default reports/compare-<base>-vs-<new>/). Raises CompareError on bad input, before
    writing anything."""
    parse_metric(metric)
    parse_threshold(threshold)
    sources = parse_source(base, "BASE"), parse_source(new, "NEW")
    out = Path(out_dir) if out_dir else Path("reports") / f"compare-{sources[0].label}-vs-{sources[1].label}"
    for role, source in zip(("BASE", "NEW"), sources, strict=True):
        if _inside(out, source.path):
            raise CompareError(f"--out={out}: inside the {role} dataset {source.path}; write it elsewhere")
    rows = load_source(sources[0], "BASE"), load_source(sources[1], "NEW")
    labels = str(sources[0]), str(sources[1])
    comparison = compare_frames(*rows, metric=metric, threshold=threshold, labels=labels)
    title = f"attnsweep compare: {sources[0]} → {sources[1]}"
    blocks = comparison_blocks(comparison)
    out.mkdir(parents=True, exist_ok=True)
    html_path, markdown_path = out / "index.html", out / "summary.md"
    html_path.write_text(_render_html(title, blocks), encoding="utf-8")
    markdown_path.write_text(_render_markdown(title, blocks), encoding="utf-8")
    text = f"{summary_text(comparison)}\ncomparison: {html_path}\nsummary:    {markdown_path}"
    return ComparisonOutput(comparison, html_path, markdown_path, text)
