"""The Accuracy section: worst errors per variant, backend and dtype (and input kind, where several
kinds ran: a backend whose error grows CLIFF_RATIO times over its randn error is marked a cliff), and a
heatmap of rel_err.

Every kept row with an error measurement counts, interpreted Triton rows included: their outputs are
exact, only their latency means nothing. The heatmap's rows are variant · backend, its columns the
points (phase, dtype, sequence length), each cell the worst rel_err over the other axes; with too many
columns the lengths are pooled.
"""

import html

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.blocks import Block, Cell, Table
from analysis.plots import axis_value, figure_svg
from analysis.rows import point_label
from analysis.schema import INPUT_KINDS

MAX_COLUMNS = 48
ANNOTATE_CELLS = 300  # print each cell's value when the grid is at most this big
MARKDOWN_ROWS = 15
ZERO_FLOOR = 1e-16  # an exact 0 drawn as this (a log scale has no 0)
# A backend whose worst rel_err on an input kind is this many times its worst on randn falls off there.
CLIFF_RATIO = 10.0


def _sci(value: object) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.2e}"


def with_input_kind(rows: pd.DataFrame) -> pd.DataFrame:
    """`inputs` filled (rows from before the axis: randn) and ordered as INPUT_KINDS."""
    kinds = rows["inputs"].fillna(INPUT_KINDS[0])
    return rows.assign(inputs=pd.Categorical(kinds, categories=INPUT_KINDS, ordered=True))


def several_kinds(rows: pd.DataFrame) -> bool:
    return rows["inputs"].nunique() > 1


def heatmap_grid(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """rel_err as a grid: index 'variant · backend', columns point labels, worst value per cell; and what a
    column stands for."""
    data = with_input_kind(rows[rows["rel_err"].notna()])
    data = data.assign(row=data["variant"].map(axis_value) + " · " + data["backend"].map(axis_value))
    data["inputs"] = data["inputs"].astype(str)
    kinds = ["inputs"] if several_kinds(data) else []
    by = [*kinds, "phase", "dtype", "seq_len"]
    if data.groupby(by, dropna=False).ngroups > MAX_COLUMNS:
        by = [*kinds, "phase", "dtype"]
    grid = data.pivot_table(index="row", columns=by, values="rel_err", aggfunc="max", dropna=False)
    grid = grid.dropna(how="all", axis=1)
    order = {p: i for i, p in enumerate(("prefill", "decode", "train", *INPUT_KINDS))}
    columns = sorted(
        grid.columns,
        # [inputs,] phase in their order, then phase and dtype by name, then lengths by number
        key=lambda c: (
            (*(order.get(v, 9) for v in c[: len(kinds) + 1]), *map(str, c[len(kinds) : len(kinds) + 2]))
            + tuple(c[len(kinds) + 2 :])
        ),
    )
    grid = grid[columns]
    grid.columns = [" ".join(axis_value(v) for v in c) for c in columns]
    return grid, " ".join(by).replace("seq_len", "sequence length")


def heatmap_svg(grid: pd.DataFrame, columns_are: str) -> str:
    values = grid.to_numpy(dtype=float)
    positive = values[values > 0]
    low = positive.min() if positive.size else ZERO_FLOOR
    shown = np.where(values > 0, values, np.where(values == 0, min(low, ZERO_FLOOR), np.nan))
    width = max(6.5, 3.2 + 0.32 * grid.shape[1])  # room for the title and the colour bar's label
    fig = Figure(figsize=(width, 1.6 + 0.28 * grid.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(shown),
        norm=LogNorm(vmin=np.nanmin(shown), vmax=max(np.nanmax(shown), np.nanmin(shown) * 10)),
        cmap=matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee"),
        aspect="auto",
    )
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize="small")
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize="small")
    if grid.size <= ANNOTATE_CELLS:
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                light = image.norm(shown[i, j]) > 0.6  # viridis turns yellow: dark text there
                ax.text(
                    j,
                    i,
                    f"{value:.0e}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if light else "white",
                )
    ax.set_xlabel(f"point ({columns_are}; worst over the other axes)")
    ax.set_ylabel("variant · backend")
    bar = fig.colorbar(image, ax=ax, label="rel_err = ‖out − ref‖ / ‖ref‖ (log scale)")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    # Within two decades a log colour bar has one or two decade ticks: label 2, 3 and 5 times them too.
    narrow = image.norm.vmax / image.norm.vmin < 100
    sparse = FuncFormatter(lambda v, _: f"{v:.0e}" if f"{v:.0e}"[0] in "235" else "")
    bar.ax.yaxis.set_minor_formatter(sparse if narrow else NullFormatter())
    fig.suptitle("Relative error against the high-precision reference")
    return figure_svg(fig)


def _against_randn(summary: pd.DataFrame) -> pd.Series:
    """Each (variant, backend, dtype, inputs) group's worst rel_err over the same group's on randn."""
    randn = summary.xs(INPUT_KINDS[0], level="inputs")["rel_err"]
    base = randn.reindex(summary.index.droplevel("inputs")).to_numpy(dtype=float)
    return pd.Series(summary["rel_err"].to_numpy(dtype=float) / base, index=summary.index)


def _cliff_cell(ratio: float) -> Cell:
    """The ratio to randn, marked as an accuracy cliff at CLIFF_RATIO or more."""
    if pd.isna(ratio):
        return Cell("—")
    return Cell(f"{ratio:.3g}× cliff" if ratio >= CLIFF_RATIO else f"{ratio:.3g}×")


def accuracy_blocks(kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", "Accuracy")]
    rows = kept[kept["max_abs_err"].notna() | kept["rel_err"].notna()]
    if rows.empty:
        return blocks + [Block("p", "No row has an accuracy measurement.")]
    rows = with_input_kind(rows)
    kinds = several_kinds(rows)
    keys = ["variant", "backend", "dtype", *(["inputs"] if kinds else [])]
    groups = rows.groupby(keys, dropna=False, observed=True)
    with_rel = rows[rows["rel_err"].notna()]
    worst = with_rel.groupby(keys, dropna=False, observed=True)["rel_err"].idxmax()
    summary = groups.agg(
        points=("phase", "size"), max_abs_err=("max_abs_err", "max"), rel_err=("rel_err", "max")
    )
    summary = summary.sort_values("rel_err", ascending=False, na_position="last", kind="stable")
    against_randn = _against_randn(summary) if kinds else None
    headers = [*keys, "points", "max abs err", "rel err", *(["× randn"] if kinds else []), "worst rel err at"]
    full, short = Table(headers), Table(headers)
    for key, r in summary.iterrows():
        at = worst.get(key)
        where = "—" if at is None or pd.isna(at) else f"{rows.loc[at, 'phase']}, {point_label(rows.loc[at])}"
        cells = [
            *map(axis_value, key),
            Cell(str(int(r["points"]))),
            Cell(_sci(r["max_abs_err"])),
            Cell(_sci(r["rel_err"])),
            *([_cliff_cell(against_randn[key])] if kinds else []),
        ]
        full.add(cells + [where])
        if len(short.rows) < MARKDOWN_ROWS:
            short.add(cells + [where])
    note = (
        "Worst value over the kept rows that have one (interpreted rows included: their outputs are "
        "exact), against the variant's high-precision reference; the worst first."
    )
    if kinds:
        note += (
            f" By input kind (workloads/inputs.py); × randn: the worst rel_err over the same variant, "
            f"backend and dtype's on randn inputs, a cliff from {CLIFF_RATIO:g}× on."
        )
    grid, columns_are = heatmap_grid(rows)
    if grid.size:
        caption = (
            "Grey: no measurement. Typical: float32 < 1e-5, bf16/fp16 1e-3..1e-2 (docs/architecture.md §4)."
        )
        svg = heatmap_svg(grid, columns_are)
        blocks.append(Block("raw", f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"))
    brief = (
        "Worst error per variant, backend and dtype against the high-precision reference; the worst first."
    )
    blocks += [Block("p", note, markdown=False), Block("p", brief, html=False)]
    blocks += [Block("table", full, markdown=False), Block("table", short, html=False)]
    if len(summary) > MARKDOWN_ROWS:
        blocks.append(
            Block("p", f"The {MARKDOWN_ROWS} worst of {len(summary)}; the report has all.", html=False)
        )
    return blocks
