"""`attnsweep compare`'s outputs: the HTML page, the Markdown summary and the short text for stdout.

The comparison itself (matching, the regression rule) is `analysis.compare`'s; this module turns a
`Comparison` into report blocks and renders them with the report's own renderer (`analysis.render`),
so the page looks like the sweep report and its tables sort by a clicked column header. The Markdown
leaves out the full per-point lists.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.blocks import Block, Cell, Table, fmt
from analysis.compare import (
    IMPROVEMENT,
    INTERPRETED,
    METRICS,
    NO_VALUE,
    NOW_FAILING,
    REGRESSION,
    VERDICTS,
    CompareError,
    Comparison,
    Source,
    compare_frames,
    load_source,
    parse_metric,
    parse_source,
    parse_threshold,
)
from analysis.plots import axis_value
from analysis.render import render_html, render_markdown
from analysis.rows import error_summary, point_label
from analysis.schema import TRAINED_PHASES


@dataclass(frozen=True)
class ComparisonOutput:
    comparison: Comparison
    html: Path
    markdown: Path
    text: str  # the short summary for stdout


def _point(row: pd.Series) -> str:
    """The point in one line: the report's label (shape, causal, a trained phase's seed), then the
    other configuration columns that tell two matched points apart (variant, backend and phase have
    their own columns)."""
    shown = {"seed": row["phase"] not in TRAINED_PHASES, "heads_kept": True}
    extras = [f" {k}={axis_value(row[k])}" for k, show in shown.items() if show and pd.notna(row[k])]
    params = "" if axis_value(row["params"]) in ("—", "{}") else f" {row['params']}"
    return f"{point_label(row)}{''.join(extras)}{params}"


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
        point=[_point(p) for _, p in points.iterrows()],
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
        point=[_point(p) for _, p in changed.iterrows()],
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
    listing = rows[keys].assign(point=[_point(r) for _, r in rows.iterrows()], status=rows["status"])
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
        Block("h3", headline(c), markdown=False),  # the page's answer stands out; Markdown: a line
        Block("p", headline(c), html=False),
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
        lines.append(f"  {p['verdict']}: {p['variant']} {p['backend']} {p['phase']} {_point(p)}: {what}")
    if len(c.groups) > 2 * limit or len(c.flagged) > limit:
        lines.append("(more in the HTML)")
    return "\n".join(lines)


def page_title(base: Source, new: Source) -> str:
    """The HTML page's heading: each side by its path below the folder both share, so two long paths do
    not fill a laptop's first screen (the Summary's table and the Markdown give them in full)."""
    paths = [Path(os.path.abspath(s.path)) for s in (base, new)]
    common = Path(os.path.commonpath(paths))
    if common == Path(common.anchor):  # nothing shared but the root: the paths as given
        names = [str(s.path) for s in (base, new)]
    else:
        names = [str(p.relative_to(common)) if p != common else p.name for p in paths]
    sides = [name + (f"@{s.run_id}" if s.run_id else "") for name, s in zip(names, (base, new), strict=True)]
    return f"attnsweep compare: {sides[0]} → {sides[1]}"


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
    html_path.write_text(render_html(page_title(*sources), blocks), encoding="utf-8")
    markdown_path.write_text(render_markdown(title, blocks), encoding="utf-8")
    text = f"{summary_text(comparison)}\ncomparison: {html_path}\nsummary:    {markdown_path}"
    return ComparisonOutput(comparison, html_path, markdown_path, text)
