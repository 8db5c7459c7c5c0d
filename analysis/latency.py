"""A phase's latency: the figure against sequence length, the table by sequence length, every metric.

Tables are capped so that a sweep of 100k rows still gives a page a person can read (and a browser
can open); a capped table says so and still shows every variant and backend when the cap allows.
"""

import html

import pandas as pd

from analysis.blocks import Block, Cell, Table, fmt, mib
from analysis.plots import (
    GROUP_AXES,
    MAX_LINES,
    MAX_PANELS,
    axis_value,
    drawn_lines,
    latency_svg,
    panel_groups,
)
from analysis.rows import fair_head, measured, shown_note

SHAPE_AXES = ("batch", "n_heads", "n_kv_heads", "head_dim", "dtype", "causal", "params")
AXIS_LABELS = {
    "batch": "batch",
    "n_heads": "heads",
    "n_kv_heads": "kv heads",
    "head_dim": "head dim",
    "dtype": "dtype",
    "causal": "causal",
    "params": "params",
}
DAGGER = "†"
INTERPRETED_NOTE = (
    f"{DAGGER} Triton ran in its CPU interpreter: the output is checked but the latency "
    "means nothing; these rows are never ranked."
)
PIVOT_ROWS = 60  # lines of the latency-by-length table in the HTML
MARKDOWN_PIVOT_ROWS = 15  # a longer one stays out of summary.md
DETAIL_ROWS = 200  # rows of the all-metrics table


def backend_label(backend: object, interpreted: bool) -> str:
    return axis_value(backend) + (f" {DAGGER}" if interpreted else "")


def _spread(row: pd.Series) -> str:
    if pd.isna(row["latency_ms_p20"]) or pd.isna(row["latency_ms_p80"]):
        return ""
    return f"{fmt(row['latency_ms_p20'])}–{fmt(row['latency_ms_p80'])}"


def _share(value: object, peak: object) -> str:
    """`value` as a share of a measured peak, for the second line of a rate cell."""
    if value is None or peak is None or pd.isna(value) or pd.isna(peak) or float(peak) <= 0:
        return ""
    return f"{100 * float(value) / float(peak):.0f}% of {fmt(peak)}"


def best_rows(ok: pd.DataFrame) -> pd.Series:
    """True for the fastest measured row of each seq_len among rows of equal GROUP_AXES, if it has rivals."""
    best = pd.Series(False, index=ok.index)
    rows = measured(ok)
    if rows.empty:
        return best
    keys = [rows[a].astype(str) for a in (*GROUP_AXES, "seq_len")]
    latency = rows["latency_ms"].astype(float)
    grouped = latency.groupby(keys, sort=False, dropna=False)
    best[grouped.idxmin()[grouped.size() > 1].to_numpy()] = True
    return best


def _figure(phase: str, ok: pd.DataFrame) -> Block:
    svg = latency_svg(ok, f"{phase}: latency against sequence length")
    if svg is None:
        return Block("p", "No positive latency to plot.", markdown=False)
    caption = "Shaded: p20–p80 of the timed runs."
    lines, n_lines = drawn_lines(ok[ok["latency_ms"] > 0])
    if n_lines > MAX_LINES:
        caption += (
            f" Lines: the {MAX_LINES} fastest of {n_lines} (geometric mean of latency over the median of "
            "all lines at the same shape and length); the tables have all."
        )
    _, drawn, total = panel_groups(lines)
    if total > len(drawn):
        caption += f" Panels: the {MAX_PANELS} shapes with the most rows of {total}."
    if ok["interpreted"].any():
        caption += f" Dashed, hollow markers ({DAGGER}): Triton's CPU interpreter, not comparable."
    return Block("raw", f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")


def _pivot(phase: str, ok: pd.DataFrame, vary: list[str], best: pd.Series) -> list[Block]:
    line_keys = ["variant", "backend", *vary, "interpreted"]
    seq_lens = sorted(ok["seq_len"].dropna().unique())
    # The last row of each (line, seq_len), as the frame is sorted; None stands for a missing value.
    keyed = ok.assign(**{k: ok[k].astype(object).where(ok[k].notna(), None) for k in line_keys})
    at = {(tuple(r[:-1]), r[-1]): i for i, *r in keyed[[*line_keys, "seq_len"]].itertuples()}
    lines = keyed.drop_duplicates(line_keys)[line_keys]
    shown = fair_head(lines, ["variant", "backend"], PIVOT_ROWS)
    labels = ["variant", "backend", *(AXIS_LABELS[a] for a in vary)]
    pivot = Table(labels + [axis_value(s) for s in seq_lens])
    for key in shown.itertuples(index=False):
        cells = [axis_value(key[0]), backend_label(key[1], key[-1]), *(axis_value(v) for v in key[2:-1])]
        for s in seq_lens:
            i = at.get((tuple(key), s))
            r = None if i is None else ok.loc[i]
            cells.append(Cell("—") if r is None else Cell(fmt(r["latency_ms"]), _spread(r), bool(best[i])))
        pivot.add(cells, bool(key[-1]))
    notes = (
        "Median latency in ms{}; columns: sequence length in tokens; bold: the fastest measured variant "
        "and backend at that length among rows of equal batch, heads, head dim, dtype and causal."
    )
    cap = shown_note(len(shown), len(lines), "lines", "the first of every variant and backend")
    in_markdown = len(lines) <= MARKDOWN_PIVOT_ROWS
    blocks = [
        Block("h3", f"{phase}: latency (ms) by sequence length", markdown=in_markdown),
        Block("p", notes.format(", p20–p80 under it") + (" " + cap if cap else ""), markdown=False),
        Block("p", notes.format(""), html=False, markdown=in_markdown),
        Block("table", pivot, markdown=in_markdown),
    ]
    if ok["interpreted"].any():
        blocks.append(Block("p", INTERPRETED_NOTE, markdown=in_markdown))
    return blocks


def _details(phase: str, ok: pd.DataFrame, vary: list[str], best: pd.Series) -> list[Block]:
    # Capped: every variant and backend's rows at its longest lengths first, shown in table order.
    longest_first = ok.sort_values("seq_len", ascending=False, kind="stable")
    shown = ok.loc[ok.index.isin(fair_head(longest_first, ["variant", "backend"], DETAIL_ROWS).index)]
    labels = ["variant", "backend", *(AXIS_LABELS[a] for a in vary)]
    rates = ["TFLOP/s", "GB/s", "% roofline", "peak mem MiB", "KV cache MiB"]
    metrics = Table(labels + ["seq len", "latency ms", "p20–p80", "runs", *rates])
    for i, r in shown.iterrows():
        cells = [axis_value(r["variant"]), backend_label(r["backend"], r["interpreted"])]
        cells += [axis_value(r[a]) for a in vary] + [Cell(axis_value(r["seq_len"]))]
        cells += [Cell(fmt(r["latency_ms"]), best=bool(best[i])), Cell(_spread(r) or "—")]
        cells += [Cell(axis_value(r["n_samples"]))]
        cells += [Cell(fmt(r["tflops"]), _share(r["tflops"], r["peak_tflops"]))]
        cells += [Cell(fmt(r["gbps"]), _share(r["gbps"], r["peak_gbps"])), Cell(fmt(r["pct_peak"]))]
        cells += [Cell(mib(r["peak_mem_bytes"])), Cell(mib(r["kv_cache_bytes"]))]
        metrics.add(cells, bool(r["interpreted"]))
    note = (
        "Rates from the cost model's FLOPs and bytes over the median latency; under them, the share of the "
        "device's measured peak (matmul TFLOP/s in this dtype, copy GB/s). % roofline: the least time the "
        "FLOPs or the bytes need at those peaks over the time taken."
    )
    cap = shown_note(len(shown), len(ok), "rows", "every variant and backend at its longest lengths first")
    return [
        Block("h3", f"{phase}: all metrics", markdown=False),
        Block("p", note + (" " + cap if cap else ""), markdown=False),
        Block("table", metrics, markdown=False),
    ]


def latency_blocks(phase: str, rows: pd.DataFrame) -> list[Block]:
    """The latency part of a phase's section, from its kept rows."""
    ok = rows[rows["status"].eq("ok")]
    if ok.empty:
        return [Block("p", f"No ok rows in this phase ({len(rows)} failed or unsupported, see Failures).")]
    vary = [a for a in SHAPE_AXES if ok[a].nunique(dropna=False) > 1]
    fixed = [
        f"{AXIS_LABELS[a]}={axis_value(ok[a].iloc[0])}"
        for a in SHAPE_AXES
        if a not in vary and not (a == "params" and axis_value(ok[a].iloc[0]) in ("—", "{}"))
    ]
    same = f"Same for all: {', '.join(fixed)}." if fixed else "Every axis of the shape varies."
    blocks = [Block("p", f"{len(ok)} ok points. {same}")]
    order = [*GROUP_AXES, "variant", "backend", "n_kv_heads", "params", "interpreted", "seq_len"]
    ok = ok.sort_values(order, na_position="last", kind="stable")
    best = best_rows(ok)
    return blocks + [_figure(phase, ok)] + _pivot(phase, ok, vary, best) + _details(phase, ok, vary, best)
