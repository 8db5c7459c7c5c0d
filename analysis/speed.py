"""A phase at a glance: each variant and backend against a baseline, and its rates against the device's peaks.

The baseline (analysis.baseline; default `best`: at each point the fastest ok row of mha among the
backends PyTorch ships) is matched point by point: same phase, device, batch, sequence length, query
heads, head dim, dtype and causal. When the baseline itself was swept over KV heads or parameters, its
kv heads and params must match too; under `best` without mha rows each variant is its own baseline, at
its own KV heads and params. Only measured rows take part (ok, a positive latency, not Triton's CPU
interpreter): an interpreted latency compares with nothing.
"""

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.baseline import VENDOR_BACKENDS, Baseline
from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import MAX_LINES, figure_svg, legend, length_ticks, log_scale, palette
from analysis.rows import measured, tally_points

MATCH_AXES = ["phase", "device", "batch", "seq_len", "n_heads", "head_dim", "dtype", "causal"]
BASELINE_OWN_AXES = ["n_kv_heads", "params"]
OWN_VARIANT_AXES = ["variant", "n_kv_heads", "params"]  # `best` of each variant's own kernels
MARKDOWN_ROWS = 15  # variant and backend pairs in summary.md (the fastest; the baseline always)


def baseline_rows(rows: pd.DataFrame, baseline: Baseline) -> tuple[pd.DataFrame, list[str]]:
    """The measured rows the baseline's latencies come from, and the axes a row shares with them:
    MATCH_AXES, the baseline's own KV heads and params where it was swept over them, and under `best`
    without measured vendor rows of its variant, the row's variant, KV heads and params."""
    rows = measured(rows)
    if not baseline.is_best:
        base = rows[rows["variant"].eq(baseline.variant) & rows["backend"].eq(baseline.backend)]
    else:
        vendor = rows[rows["backend"].isin(VENDOR_BACKENDS)]
        base = vendor[vendor["variant"].eq(baseline.variant)]
        if base.empty:
            return vendor, MATCH_AXES + OWN_VARIANT_AXES
    keys = list(MATCH_AXES)
    if base.duplicated(keys + ["backend"]).any():
        per_point = base.groupby(MATCH_AXES + ["backend"], dropna=False)
        keys += [a for a in BASELINE_OWN_AXES if per_point[a].nunique().gt(1).any()]
    return base, keys


def _key_text(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Keys as text: a missing value matches a missing value whatever the column's dtype (None, NaN).
    return rows[keys].astype(str).fillna("—")


def baseline_points(rows: pd.DataFrame, baseline: Baseline) -> tuple[pd.DataFrame, list[str]]:
    """One row per point the baseline was measured at: its keys (as text), `baseline_backend` and
    `baseline_ms`: each backend's median latency there, the fastest backend's (a tie: the first in
    VENDOR_BACKENDS). A fixed baseline has one backend. Also the keys."""
    base, keys = baseline_rows(rows, baseline)
    table = _key_text(base, keys)
    table = table.assign(baseline_backend=base["backend"], baseline_ms=base["latency_ms"].astype(float))
    medians = table.groupby([*keys, "baseline_backend"])["baseline_ms"].median().reset_index()
    tie = medians["baseline_backend"].map({b: i for i, b in enumerate(VENDOR_BACKENDS)})
    order = medians.assign(_tie=tie).sort_values(["baseline_ms", "_tie"], kind="stable")
    return order.drop_duplicates(keys).drop(columns="_tie").reset_index(drop=True), keys


def speedups(rows: pd.DataFrame, baseline: Baseline) -> pd.DataFrame:
    """The measured rows with `baseline_ms` (the baseline's latency at the same point, NaN without one),
    `baseline_backend` (the backend it was measured on) and `speedup` = baseline_ms / latency_ms
    (above 1: faster than the baseline)."""
    points, keys = baseline_points(rows, baseline)
    rows = measured(rows)
    found = points.set_index(keys).reindex(pd.MultiIndex.from_frame(_key_text(rows, keys)))
    baseline_ms = found["baseline_ms"].to_numpy(dtype=float)
    return rows.assign(
        baseline_ms=baseline_ms,
        baseline_backend=found["baseline_backend"].to_numpy(),
        speedup=baseline_ms / rows["latency_ms"].to_numpy(dtype=float),
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


def baseline_name(rows: pd.DataFrame, baseline: Baseline) -> str:
    """The baseline in words for a phase's rows: under `best`, whose kernels it is the fastest of."""
    if baseline.is_best and "variant" in baseline_rows(rows, baseline)[1]:
        return "the fastest PyTorch kernel of each variant"
    return str(baseline)


def baseline_sentence(rows: pd.DataFrame, baseline: Baseline) -> str:
    """Under `best`, which backend was the baseline at how many points ('' for a fixed baseline)."""
    if not baseline.is_best:
        return ""
    points, keys = baseline_points(rows, baseline)
    candidates = ", ".join(VENDOR_BACKENDS)
    if points.empty:
        return f"No PyTorch kernel ({candidates}) has a measured row in this phase: no baseline, no speedups."

    def counts(group: pd.DataFrame) -> str:
        return tally_points(group["baseline_backend"], list(VENDOR_BACKENDS))

    whose = f"of {baseline.variant}"
    if "variant" in keys:
        whose = f"of the row's own variant (no measured row of {baseline.variant} on these in this phase)"
        picked = "; ".join(f"{v}: {counts(g)}" for v, g in points.groupby("variant", sort=True))
    else:
        picked = counts(points)
    return f"Baseline best: at each point the fastest ok row {whose} among {candidates}: {picked}."


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
    ax.set_ylabel(f"speedup over {baseline.label if baseline.is_best else baseline} (×, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    legend(fig, handles)
    return figure_svg(fig)


def _glance_tables(summary: pd.DataFrame, baseline: Baseline) -> tuple[Table, Table]:
    """The full table (HTML) and the summary.md one: the MARKDOWN_ROWS fastest pairs, and the baseline."""
    table = Table(
        ["variant", "backend", "points", f"× {baseline.label}", "min–max"]
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
    return table, short


def _glance_notes(
    summary: pd.DataFrame, baseline: Baseline, name: str, shown: int, pairs: int
) -> list[Block]:
    """What the table's columns mean: at length in the HTML, in a line in summary.md."""
    note = (
        f"Speedup: the baseline's latency over the row's at the same point (same device, batch, length, "
        f"heads, head dim, dtype, causal), geometric mean over the matched points; above 1× is faster than "
        f"{name}. Best TFLOP/s and GB/s: the highest over the points, with its share of the device's "
        "measured peak in that dtype; % roofline: the least time the FLOPs or bytes need at those peaks "
        "over the time taken. Interpreted Triton rows are left out."
    )
    brief = (
        f"Speedup over {name}: geometric mean over matched points (same shape and device), above 1× "
        "is faster; % peak: share of the device's measured peak; interpreted Triton rows left out."
    )
    if shown < pairs:
        brief += f" The {shown} fastest of {pairs} pairs; the report has all."
    pair = summary["variant"].eq(baseline.variant) & summary["backend"].eq(baseline.backend)
    if not baseline.is_best and not pair.any():
        note += f" {baseline} has no measured row in this phase: no speedups."
        brief += f" {baseline} has no measured row in this phase: no speedups."
    return [Block("p", note, markdown=False), Block("p", brief, html=False)]


def glance_blocks(phase: str, rows: pd.DataFrame, baseline: Baseline) -> list[Block]:
    """The 'at a glance' table and the speedup figure of one phase, from its kept rows."""
    name = baseline_name(rows, baseline)
    blocks = [Block("h3", f"{phase}: at a glance, against {name}")]
    summary = glance(rows, baseline)
    if summary.empty:
        return blocks + [Block("p", "No measured rows (ok, not interpreted) in this phase.")]
    table, short = _glance_tables(summary, baseline)
    blocks += _glance_notes(summary, baseline, name, len(short.rows), len(table.rows))
    blocks += [Block("table", table, markdown=False), Block("table", short, html=False)]
    if sentence := baseline_sentence(rows, baseline):
        blocks.append(Block("p", sentence))
    svg = speedup_svg(rows, baseline, f"{phase}: speedup over {name}")
    if svg is not None:
        caption = "Geometric mean over the matched points of each length; the black line (1×): the baseline."
        others = int(summary["matched"].gt(0).sum()) - (0 if baseline.is_best else 1)
        if others > MAX_LINES:
            caption += (
                f" Lines: the {MAX_LINES} fastest of {others} variant and backend pairs (table above: all)."
            )
        blocks.append(Block("raw", f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"))
    return blocks
