"""The roofline: achieved rate against arithmetic intensity, under the device's measured ceilings.

Arithmetic intensity is the cost model's FLOPs over its bytes moved (FLOP/byte); the achieved rate is
FLOPs over the median latency. The ceilings are the worker's own measurements recorded in every row
(`peak_tflops`: a matmul in the row's dtype, `peak_gbps`: a device copy), so a panel per device and
dtype draws min(peak TFLOP/s, intensity × peak GB/s). Only measured rows are drawn (ok, not Triton's
CPU interpreter, positive FLOPs and bytes).
"""

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value, figure_svg, log_scale, palette
from analysis.rows import measured

MAX_PANELS = 4
MAX_POINTS = 1500  # per panel; more: a fixed random sample (drawing is what a large report spends time on)
_PHASE_MARKERS = {"prefill": "o", "decode": "s", "train": "^"}


def roofline_rows(kept: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with `intensity` (FLOP/byte) and `achieved` (TFLOP/s)."""
    rows = measured(kept)
    rows = rows[(rows["flops"] > 0) & (rows["bytes_moved"] > 0)]
    return rows.assign(
        intensity=rows["flops"] / rows["bytes_moved"],
        achieved=rows["flops"] / rows["latency_ms"] / 1e9,
    )


def ceilings(rows: pd.DataFrame) -> pd.DataFrame:
    """Per device and dtype: the median measured peaks (runs may measure slightly different ones)."""
    with_peaks = rows[(rows["peak_tflops"] > 0) & (rows["peak_gbps"] > 0)]
    table = with_peaks.groupby(["device", "dtype"], sort=True).agg(
        peak_tflops=("peak_tflops", "median"), peak_gbps=("peak_gbps", "median"), rows=("phase", "size")
    )
    table["ridge"] = table["peak_tflops"] * 1e3 / table["peak_gbps"]  # FLOP/byte where the roofs meet
    return table.reset_index()


def roofline_svg(rows: pd.DataFrame, roofs: pd.DataFrame) -> str:
    panels = roofs.sort_values("rows", ascending=False, kind="stable").head(MAX_PANELS)
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(5.6 * ncols + 2.2, 4.2 * nrows + 0.4), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    variants = sorted(rows["variant"].unique())
    colors = palette(variants)
    for ax, roof in zip(axes, panels.itertuples(index=False), strict=False):
        data = rows[rows["device"].eq(roof.device) & rows["dtype"].eq(roof.dtype)]
        if len(data) > MAX_POINTS:
            data = data.sample(n=MAX_POINTS, random_state=0)
        for (phase, variant), group in data.groupby(["phase", "variant"], sort=True):
            ax.scatter(
                group["intensity"],
                group["achieved"],
                s=14,
                alpha=0.7,
                color=colors[variant],
                marker=_PHASE_MARKERS.get(phase, "D"),
                linewidths=0,
            )
        low = min(data["intensity"].min(), roof.ridge) / 2
        high = max(data["intensity"].max(), roof.ridge) * 2
        x = np.geomspace(low, high, 200)
        ax.plot(x, np.minimum(roof.peak_tflops, x * roof.peak_gbps / 1e3), color="black", linewidth=1.5)
        ax.annotate(
            f"{fmt(roof.peak_tflops)} TFLOP/s",
            (high, roof.peak_tflops),
            ha="right",
            va="bottom",
            fontsize="small",
        )
        ax.annotate(
            f"{fmt(roof.peak_gbps)} GB/s", (low, low * roof.peak_gbps / 1e3), fontsize="small", va="bottom"
        )
        log_scale(ax, "x")
        log_scale(ax, "y")
        ax.set_xlabel("arithmetic intensity (FLOP/byte, log scale)")
        ax.set_ylabel("achieved TFLOP/s (log scale)")
        ax.set_title(f"{roof.device}, {roof.dtype}", fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[v], marker="o", linestyle="", label=v) for v in variants]
    phases = sorted(rows["phase"].unique())
    handles += [
        Line2D([], [], color="grey", marker=_PHASE_MARKERS.get(p, "D"), linestyle="", label=p) for p in phases
    ]
    handles.append(Line2D([], [], color="black", label="measured ceilings"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small")
    fig.suptitle("Roofline: achieved rate against arithmetic intensity")
    return figure_svg(fig)


def roofline_blocks(kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", "Roofline")]
    rows = roofline_rows(kept)
    roofs = ceilings(rows)
    if rows.empty or roofs.empty:
        return blocks + [Block("p", "No measured row with FLOPs, bytes and the device's measured peaks.")]
    table = Table(["device", "dtype", "peak TFLOP/s", "peak GB/s", "ridge FLOP/byte", "rows"])
    for r in roofs.itertuples(index=False):
        table.add(
            [r.device, r.dtype, Cell(fmt(r.peak_tflops)), Cell(fmt(r.peak_gbps)), Cell(fmt(r.ridge))]
            + [Cell(axis_value(r.rows))]
        )
    note = (
        "Measured ceilings (median over the rows): a square matmul in the dtype, and a device-to-device "
        "copy. A point left of the ridge is bound by memory bandwidth, right of it by compute; its "
        "height under the roof is what the kernel leaves on the table."
    )
    caption = "Colour: variant; marker: phase; black: min(peak TFLOP/s, intensity × peak GB/s)."
    if roofs["rows"].max() > MAX_POINTS:
        caption += f" A panel of more than {MAX_POINTS} points draws a random sample of {MAX_POINTS}."
    if len(roofs) > MAX_PANELS:
        caption += f" Panels: the {MAX_PANELS} device and dtype pairs with the most rows of {len(roofs)}."
    figure = f"<figure>{roofline_svg(rows, roofs)}<figcaption>{html.escape(caption)}</figcaption></figure>"
    return blocks + [Block("p", note, markdown=False), Block("table", table), Block("raw", figure)]
