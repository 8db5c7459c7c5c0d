"""The report's KV-cache section: bytes cached per token and layer for every variant and configuration.

The numbers are the cost models' (analytic, so unsupported rows carry them too). For variants whose
cache per token shrinks with length (streaming heads keep sink + window tokens), the longest sequence
of the configuration is shown and named.
"""

import html

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value, figure_svg, palette

CONFIG = ["variant", "n_heads", "n_kv_heads", "head_dim", "dtype", "params"]
MAX_BARS = 60
MARKDOWN_ROWS = 20  # a longer list stays out of summary.md
LOG_SCALE_RATIO = 30


def _config_label(row: pd.Series) -> str:
    params = axis_value(row["params"])
    label = f"{row['variant']} H={axis_value(row['n_heads'])}/{axis_value(row['n_kv_heads'])} "
    label += f"d={axis_value(row['head_dim'])} {row['dtype']}"
    return label + (f" {params}" if params not in ("—", "{}") else "")


def per_config(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (its longest sequence), smallest cache first."""
    rows = kept[kept["kv_bytes_per_token"].notna()]
    if rows.empty:
        return rows
    longest = rows.sort_values("seq_len").groupby(CONFIG, dropna=False, sort=False).tail(1)
    return longest.sort_values(["kv_bytes_per_token", "variant"], kind="stable")


def kv_cache_svg(configs: pd.DataFrame) -> str:
    shown = configs.head(MAX_BARS)
    colors = palette(sorted(shown["variant"].unique()))
    fig = Figure(figsize=(9, 0.9 + 0.26 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    y = range(len(shown))
    ax.barh(
        list(y),
        shown["kv_bytes_per_token"].astype(float),
        color=[colors[v] for v in shown["variant"]],
    )
    ax.set_yticks(list(y), [_config_label(r) for _, r in shown.iterrows()], fontsize="small")
    ax.invert_yaxis()
    values = shown["kv_bytes_per_token"].astype(float)
    # Log scale only when the sizes span orders of magnitude; bars on a log axis hide ratios otherwise.
    log = values.min() > 0 and values.max() / values.min() > LOG_SCALE_RATIO
    if log:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("KV cache per token and layer (bytes" + (", log scale)" if log else ")"))
    ax.grid(True, axis="x", which="major", alpha=0.3)
    fig.suptitle("KV cache per token across variants")
    return figure_svg(fig)


def kv_cache_blocks(kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", "KV cache per token")]
    configs = per_config(kept)
    if configs.empty:
        return blocks + [Block("p", "No row has a KV-cache size.")]
    table = Table(
        [
            "variant",
            "heads",
            "kv heads",
            "head dim",
            "dtype",
            "params",
            "at seq len",
            "bytes/token",
            "KiB/token",
        ]
    )
    for _, r in configs.iterrows():
        per_token = float(r["kv_bytes_per_token"])
        table.add(
            [
                r["variant"],
                Cell(axis_value(r["n_heads"])),
                Cell(axis_value(r["n_kv_heads"])),
                Cell(axis_value(r["head_dim"])),
                axis_value(r["dtype"]),
                axis_value(r["params"]),
                Cell(axis_value(r["seq_len"])),
                Cell(fmt(per_token)),
                Cell(fmt(per_token / 1024)),
            ]
        )
    note = (
        "Bytes each token adds to one layer's decode cache, from each variant's cost model "
        "(MHA 2·H·d, GQA 2·G·d, MQA 2·d, MLA latent_dim + rope_dim elements, times the dtype size)."
    )
    if len(configs) > MAX_BARS:
        note += f" The chart shows the {MAX_BARS} smallest of {len(configs)} configurations."
    caption = "One bar per configuration; colour: variant."
    figure = f"<figure>{kv_cache_svg(configs)}<figcaption>{html.escape(caption)}</figcaption></figure>"
    in_markdown = len(configs) <= MARKDOWN_ROWS
    blocks += [Block("p", note), Block("raw", figure), Block("table", table, markdown=in_markdown)]
    if not in_markdown:
        summary = f"{len(configs)} configurations, listed in the report; by heads: see Memory against heads."
        blocks.append(Block("p", summary, html=False))
    return blocks
