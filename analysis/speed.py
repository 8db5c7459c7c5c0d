"""A phase at a glance: each variant and backend against a baseline, and its rates against the device's peaks.

The baseline (default: mha on torch-sdpa) is matched point by point: same phase, device, batch,
sequence length, query heads, head dim, dtype and causal. When the baseline itself was swept over KV
heads or parameters, its kv heads and params must match too. Only measured rows take part (ok, a
positive latency, not Triton's CPU interpreter): an interpreted latency compares with nothing.
"""

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.baseline import Baseline
from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import MAX_LINES, figure_svg, legend, length_ticks, log_scale, palette
from analysis.rows import measured

MATCH_AXES = ["phase", "device", "batch", "seq_len", "n_heads", "head_dim", "dtype", "causal"]
BASELINE_OWN_AXES = ["n_kv_heads", "params"]
MARKDOWN_ROWS = 15  # variant and backend pairs in summary.md (the fastest; the baseline always)


def speedups(rows: pd.DataFrame, baseline: Baseline) -> pd.DataFrame:
    """The measured rows with `baseline_ms` (the baseline's latency at the same point, NaN without one)
    and `speedup` = baseline_ms / latency_ms (above 1: faster than the baseline)."""
    rows = measured(rows)
    base = rows[rows["variant"].eq(baseline.variant) & rows["backend"].eq(baseline.backend)]
    keys = list(MATCH_AXES)
    if base.duplicated(keys).any():
        keys += [
            a for a in BASELINE_OWN_AXES if base.groupby(MATCH_AXES, dropna=False)[a].nunique().gt(1).any()
        ]
    # Keys as text: a missing value matches a missing value whatever the column's dtype (None, NaN).
    text = rows[keys].astype(str).fillna("—")
    reference = base["latency_ms"].groupby([text.loc[base.index, k] for k in keys]).median()
    baseline_ms = reference.reindex(pd.MultiIndex.from_frame(text)).to_numpy()
    return rows.assign(
        baseline_ms=baseline_ms, speedup=baseline_ms / rows["latency_ms"].to_numpy(dtype=float)
    )


def _geomean(values: pd.Series) -> float:
    values = values.dropna()
    return float(np.exp(np.log(values).mean())) if len(values) else np.nan


def _ratio(value: float) -> str:
    return "—" if pd.isna(value) else f"{fmt(value)}×"


def _share(value: float, peak: float) -> str:
    if pd.isna(value) or pd.isna(peak) or peak <= 0:
        return "—"
    percent = 100 * value / peak
    return "<0.01%" if percent < 0.01 else f"{fmt(percent)}%"


def glance(rows: pd.DataFrame, baseline: Baseline) -> pd.DataFrame:
    """One row per (variant, backend) of the measured rows: matched points, speedup over the baseline
    (geometric mean, min, max), the best TFLOP/s and GB/s with their share of the row's measured peak,
    and the median % of the roofline."""
    rows = speedups(rows, baseline)
    rows = rows.assign(
        tflops_share=rows["tflops"].astype(float) / rows["peak_tflops"].astype(float),
        gbps_share=rows["gbps"].astype(float) / rows["peak_gbps"].astype(float),
    )
    grouped = rows.groupby(["variant", "backend"], sort=True)
    table = grouped.agg(
        points=("latency_ms", "size"),
        matched=("speedup", "count"),
        speedup=("speedup", _geomean),
        speedup_min=("speedup", "min"),
        speedup_max=("speedup", "max"),
        tflops=("tflops", "max"),
        gbps=("gbps", "max"),
        pct_roofline=("pct_peak", "median"),
    )
    # The peak of the row that reached the best rate (peaks differ by dtype and device).
    for rate in ("tflops", "gbps"):
        valid = rows[rows[rate].notna()]
        at_best = valid.loc[valid[rate].groupby([valid["variant"], valid["backend"]]).idxmax()]
        peaks = at_best.set_index(["variant", "backend"])[f"peak_{rate}"]
        table[f"peak_{rate}"] = peaks.reindex(table.index)
    return table.reset_index().sort_values(
        ["speedup", "variant"], ascending=[False, True], na_position="last"
    )


def speedup_svg(rows: pd.DataFrame, baseline: Baseline, title: str) -> str | None:
    """Speedup over the baseline against sequence length, one line per variant and backend (geometric
    mean over the matched points of a length); None without any matched point."""
    data = speedups(rows, baseline).dropna(subset=["speedup"])
    data = data[~(data["variant"].eq(baseline.variant) & data["backend"].eq(baseline.backend))]
    if data.empty:
        return None
    overall = data.groupby(["variant", "backend"])["speedup"].agg(_geomean)
    fastest = overall.nlargest(MAX_LINES).index
    data = data[pd.MultiIndex.from_frame(data[["variant", "backend"]]).isin(fastest)]
    curve = data.groupby(["variant", "backend", "seq_len"])["speedup"].agg(_geomean).reset_index()
    fig = Figure(figsize=(8.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = palette(sorted(curve["variant"].unique()))
    backends = sorted(curve["backend"].unique())
    handles = {}
    for (variant, backend), line in curve.groupby(["variant", "backend"], sort=True):
        (handles[f"{variant} · {backend}"],) = ax.plot(
            line["seq_len"],
            line["speedup"],
            color=colors[variant],
            marker="os^DvPX"[backends.index(backend) % 7],
            linestyle=("-", "--", ":", "-.")[backends.index(backend) % 4],
        )
    ax.axhline(1.0, color="black", linewidth=1)
    log_scale(ax, "x")
    log_scale(ax, "y", "×")
    length_ticks(ax, curve["seq_len"])
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(f"speedup over {baseline} (×, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    legend(fig, handles)
    return figure_svg(fig)


def glance_blocks(phase: str, rows: pd.DataFrame, baseline: Baseline) -> list[Block]:
    """The 'at a glance' table and the speedup figure of one phase, from its kept rows."""
    blocks = [Block("h3", f"{phase}: at a glance, against {baseline}")]
    summary = glance(rows, baseline)
    if summary.empty:
        return blocks + [Block("p", "No measured rows (ok, not interpreted) in this phase.")]
    table = Table(
        ["variant", "backend", "points", f"× {baseline.variant}/{baseline.backend}", "min–max"]
        + ["best TFLOP/s", "% peak", "best GB/s", "% peak", "median % roofline"]
    )
    short = Table(table.headers)
    for r in summary.itertuples(index=False):
        is_base = r.variant == baseline.variant and r.backend == baseline.backend
        spread = "—" if r.matched == 0 or is_base else f"{fmt(r.speedup_min)}–{fmt(r.speedup_max)}"
        points = f"{r.points}" if r.matched == r.points or is_base else f"{r.points} ({r.matched} matched)"
        cells = [r.variant, r.backend, Cell(points), Cell("baseline" if is_base else _ratio(r.speedup))]
        cells += [Cell(spread), Cell(fmt(r.tflops)), Cell(_share(r.tflops, r.peak_tflops)), Cell(fmt(r.gbps))]
        cells += [Cell(_share(r.gbps, r.peak_gbps)), Cell(fmt(r.pct_roofline))]
        table.add(cells)
        if len(short.rows) < MARKDOWN_ROWS or is_base:
            short.add(cells)
    note = (
        f"Speedup: the baseline's latency over the row's at the same point (same device, batch, length, "
        f"heads, head dim, dtype, causal), geometric mean over the matched points; above 1× is faster than "
        f"{baseline}. Best TFLOP/s and GB/s: the highest over the points, with its share of the device's "
        "measured peak in that dtype; % roofline: the least time the FLOPs or bytes need at those peaks "
        "over the time taken. Interpreted Triton rows are left out."
    )
    brief = (
        f"Speedup over {baseline}: geometric mean over matched points (same shape and device), above 1× "
        "is faster; % peak: share of the device's measured peak; interpreted Triton rows left out."
    )
    if len(short.rows) < len(table.rows):
        brief += f" The {len(short.rows)} fastest of {len(table.rows)} pairs; the report has all."
    if not (summary["variant"].eq(baseline.variant) & summary["backend"].eq(baseline.backend)).any():
        note += f" {baseline} has no measured row in this phase: no speedups."
        brief += f" {baseline} has no measured row in this phase: no speedups."
    blocks += [Block("p", note, markdown=False), Block("p", brief, html=False)]
    blocks += [Block("table", table, markdown=False), Block("table", short, html=False)]
    svg = speedup_svg(rows, baseline, f"{phase}: speedup over {baseline}")
    if svg is not None:
        caption = f"Geometric mean over the matched points of each length; the black line is {baseline}."
        others = int(summary["matched"].gt(0).sum()) - 1
        if others > MAX_LINES:
            caption += (
                f" Lines: the {MAX_LINES} fastest of {others} variant and backend pairs (table above: all)."
            )
        blocks.append(Block("raw", f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"))
    return blocks
