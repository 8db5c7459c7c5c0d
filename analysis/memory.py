"""Memory against heads: the KV cache each token adds, and the measured peak memory, as heads grow.

A line is a variant with its own parameters and its KV-head rule: "kv=H" when it keeps as many KV
heads as query heads (MHA), "kv=G" for a fixed count G (GQA, MQA). The KV cache per token is the
cost model's (every row has it); the peak memory is measured (GPU rows only), so its panels fix one
shape per phase (the one measured at the most head counts) and one backend (the baseline's; torch-sdpa,
PyTorch's own pick, under the baseline `best`; else the one with the most rows) to compare like with like.
"""

import html
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value, figure_svg, legend, log_scale, palette
from analysis.rows import measured
from analysis.schema import TRAINED_PHASES

SHAPE = ["batch", "seq_len", "head_dim", "dtype", "causal"]
MAX_LINES = 24  # lines per panel; more: the ones measured at the most head counts
MARKDOWN_ROWS = 20
LOG_SCALE_RATIO = 30


def line_label(variant: object, n_kv_heads: object, n_heads: object, params: object) -> str:
    kv = "H" if n_kv_heads == n_heads else axis_value(n_kv_heads)
    own = axis_value(params)
    return f"{variant} kv={kv}" + ("" if own in ("—", "{}") else f" {own}")


def with_lines(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with `line`: variant, KV-head rule and params as one label."""
    keys = zip(rows["variant"], rows["n_kv_heads"], rows["n_heads"], rows["params"], strict=True)
    return rows.assign(line=pd.Series([line_label(*k) for k in keys], index=rows.index, dtype=object))


def _top_lines(rows: pd.DataFrame) -> pd.DataFrame:
    counts = rows.groupby("line")["n_heads"].nunique().sort_values(ascending=False, kind="stable")
    return rows[rows["line"].isin(counts.index[:MAX_LINES])]


def _shape_rows(rows: pd.DataFrame, backend: str) -> tuple[pd.DataFrame, str]:
    """The rows of one backend and one shape: the shape measured at the most head counts (then the
    longest sequence, the largest batch), and its description."""
    on = rows[rows["backend"].eq(backend)]
    if on.empty:
        on = rows[rows["backend"].eq(rows["backend"].value_counts().index[0])]
    heads = on.groupby(SHAPE, dropna=False)["n_heads"].nunique().rename("heads").reset_index()
    pick = heads.sort_values(["heads", "seq_len", "batch"], ascending=False, kind="stable").iloc[0]
    chosen = pd.Series(True, index=on.index)
    for axis in SHAPE:
        chosen &= on[axis].isna() if pd.isna(pick[axis]) else on[axis].eq(pick[axis])
    shape = f"{on['backend'].iloc[0]}, B={axis_value(pick['batch'])} N={axis_value(pick['seq_len'])} "
    shape += f"d={axis_value(pick['head_dim'])} {axis_value(pick['dtype'])}"
    return on[chosen], shape + (" causal" if pick["causal"] == 1 else "")


def _draw(ax, rows: pd.DataFrame, value: str, scale: float, ylabel: str, colors: dict, handles: dict) -> None:
    for line, group in _top_lines(rows).groupby("line", sort=True):
        points = group.groupby("n_heads")[value].median() / scale
        n = list(colors).index(line)  # marker and dash vary too: equal lines must not hide each other
        style = dict(
            marker="os^DvPX*"[n % 8], linestyle=("-", "--", ":", "-.")[n // 8 % 4], markerfacecolor="none"
        )
        (handles[line],) = ax.plot(points.index, points.to_numpy(), color=colors[line], **style)
    values = rows[value].astype(float) / scale
    if values.min() > 0 and values.max() / values.min() > LOG_SCALE_RATIO:
        log_scale(ax, "y")
        ylabel += ", log scale"
    ax.set_xscale("log", base=2)
    ticks = sorted(rows["n_heads"].dropna().unique())
    ax.set_xticks(ticks, [axis_value(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("query heads")
    ax.set_ylabel(ylabel + ")")
    ax.grid(True, which="major", alpha=0.3)


@dataclass(frozen=True)
class Panel:
    title: str
    shape: str  # what is held fixed
    rows: pd.DataFrame
    value: str  # the column drawn
    scale: float
    unit: str


def memory_panels(kept: pd.DataFrame, backend: str) -> list[Panel]:
    """The KV cache per token (cost model, every row) and, per phase, the measured peak memory."""
    speed_phases = kept[~kept["phase"].isin(TRAINED_PHASES)]
    kv = with_lines(speed_phases[speed_phases["kv_bytes_per_token"] > 0])
    mem = with_lines(measured(speed_phases)[lambda f: f["peak_mem_bytes"] > 0])
    panels = []
    if not kv.empty:
        head_dim, dtype = kv.groupby(["head_dim", "dtype"]).size().idxmax()
        kv = kv[kv["head_dim"].eq(head_dim) & kv["dtype"].eq(dtype)]
        shape = f"d={axis_value(head_dim)} {dtype}"
        panels.append(Panel("KV cache per token and layer", shape, kv, "kv_bytes_per_token", 1024, "KiB"))
    for phase, rows in mem.groupby("phase", sort=False):
        shape_rows, shape = _shape_rows(rows, backend)
        panels.append(
            Panel(f"{phase}: measured peak memory", shape, shape_rows, "peak_mem_bytes", 2**20, "MiB")
        )
    return panels


def memory_svg(panels: list[Panel]) -> str:
    colors = palette(sorted(set().union(*(set(p.rows["line"]) for p in panels))))
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(5.2 * ncols + 2.6, 3.8 * nrows + 0.4), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    handles: dict = {}
    for ax, panel in zip(axes, panels, strict=False):
        _draw(
            ax,
            panel.rows,
            panel.value,
            panel.scale,
            f"{panel.title.split(': ')[-1]} ({panel.unit}",
            colors,
            handles,
        )
        ax.set_title(f"{panel.title}\n{panel.shape}", fontsize="medium")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    legend(fig, handles)
    fig.suptitle("Memory against query heads")
    return figure_svg(fig)


def memory_table(panels: list[Panel]) -> Table:
    """One row per panel and line, one column per head count: the median value."""
    heads = sorted(set().union(*(set(p.rows["n_heads"].dropna()) for p in panels)))
    table = Table(["what", "shape", "line", *(f"H={axis_value(h)}" for h in heads)])
    for panel in panels:
        per_line = (
            panel.rows.groupby(["line", "n_heads"], sort=True)[panel.value].median().unstack() / panel.scale
        )
        for line, values in per_line.iterrows():
            cells = [Cell("—" if pd.isna(values.get(h)) else fmt(values.get(h))) for h in heads]
            table.add([f"{panel.title} ({panel.unit})", panel.shape, line, *cells])
    return table


def memory_blocks(kept: pd.DataFrame, backend: str) -> list[Block]:
    """The section from the kept rows; `backend` is the one the peak-memory panels prefer."""
    blocks = [Block("h2", "Memory against heads")]
    panels = memory_panels(kept, backend)
    if not panels:
        return blocks + [Block("p", "No row has a KV-cache size or a measured peak memory.")]
    note = (
        "KV cache: bytes each token adds to one layer's decode cache (cost model), at the most common head "
        "dim and dtype. Peak memory: measured max_memory_allocated of one forward (training step: forward "
        "and backward), median over the rows of a line; one backend and shape per phase, as named: the "
        "report baseline's backend (under best: torch-sdpa, what PyTorch picks itself) where it has rows, "
        "else the one with the most."
    )
    several_heads = max(p.rows["n_heads"].nunique() for p in panels) > 1
    blocks = [Block("h2", "Memory against heads", markdown=several_heads), Block("p", note, markdown=False)]
    if several_heads:
        caption = "One line per variant, KV-head rule (kv=H: as many KV heads as query heads) and params."
        if any(p.rows["line"].nunique() > MAX_LINES for p in panels):
            caption += f" At most {MAX_LINES} lines a panel: those measured at the most head counts."
        figure = f"<figure>{memory_svg(panels)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        blocks.append(Block("raw", figure))
    blocks.append(Block("table", memory_table(panels), markdown=False))
    kv = [p for p in panels if p.value == "kv_bytes_per_token"]
    if kv and several_heads:  # with one head count the KV cache section says it all
        # summary.md: the KV cache lines only, the panel's title and shape said once above them.
        kv_table = memory_table(kv)
        lines = [row[2:] for row in kv_table.rows]
        short = Table(kv_table.headers[2:], lines[:MARKDOWN_ROWS], [False] * len(lines[:MARKDOWN_ROWS]))
        more = (
            f" The first {MARKDOWN_ROWS} of {len(lines)} lines; the report has all."
            if len(lines) > MARKDOWN_ROWS
            else ""
        )
        blocks.append(
            Block("p", f"KV cache per token and layer (KiB) by query heads, {kv[0].shape}.{more}", html=False)
        )
        blocks.append(Block("table", short, html=False))
    return blocks
