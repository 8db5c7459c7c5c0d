"""Latency-versus-sequence-length figures for the report, as inline SVG text.

Figures are built with `matplotlib.figure.Figure` directly, never through pyplot: nothing needs a
display, no global figure registry fills up, and a process that already uses pyplot keeps its backend.
"""

import io
import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from analysis.blocks import fmt

# Axes shared by every line of one subplot; when one varies within a phase it splits the subplots.
GROUP_AXES = ("batch", "n_heads", "head_dim", "dtype", "causal")
# One line per distinct value of these; n_kv_heads and params are named in the legend when they vary.
LINE_AXES = ("variant", "n_kv_heads", "params", "backend", "interpreted")
# A hue family per (variant, n_kv_heads, params), a shade and a marker per backend.
_FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MAX_PANELS = 6  # subplots of one figure; more shape groups: the most populated ones are drawn
MAX_LINES = 16  # lines of one figure; more: the fastest ones are drawn
LEGEND_ROWS = 24  # legend entries per legend column


def palette(names: list[str]) -> dict[str, object]:
    """A distinct colour per name: tab10 while it suffices (tab20's pairs look alike), tab20 beyond."""
    colors = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: colors(i % colors.N) for i, name in enumerate(names)}


def log_scale(ax, which: str, suffix: str = "") -> None:
    """A log axis labelled in plain numbers (mathtext's layout would be most of a big report's drawing
    time). Call it once the data is drawn: over less than a decade, where a log axis has one or two
    ticks, the ticks are spaced as on a linear axis instead."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    low, high = sorted(axis.get_data_interval())
    if 0 < low and high / low < 10:
        axis.set_major_locator(MaxNLocator(6))
        axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _: fmt(value) + suffix))
    axis.set_minor_formatter(NullFormatter())


def length_ticks(ax, lengths: object) -> None:
    """The sequence lengths as the x ticks of a log axis, a label only where it has room (1000 and 1024
    would print over each other), when there are few enough to name."""
    ticks = sorted(set(lengths))
    if not ticks or len(ticks) > 12:
        return
    labels, last = [], None
    for tick in ticks:
        roomy = last is None or tick / last >= 1.25
        labels.append(axis_value(tick) if roomy else "")
        last = tick if roomy else last
    ax.set_xticks(ticks, labels, rotation=90 if len(ticks) > 5 else 0)
    ax.xaxis.set_minor_formatter(NullFormatter())


SHORT_AXES = {"batch": "B", "n_heads": "H", "head_dim": "d"}


def shape_title(axes: list[str], values: tuple) -> str:
    """A panel's shape in few characters: 'B=4 H=16 d=64 bfloat16 causal'."""
    parts = []
    for axis, value in zip(axes, values, strict=True):
        if axis in SHORT_AXES:
            parts.append(f"{SHORT_AXES[axis]}={axis_value(value)}")
        elif axis == "causal":
            parts.append("causal" if value == 1 else "not causal" if value == 0 else "causal —")
        else:
            parts.append(axis_value(value))
    return " ".join(parts)


def axis_value(value: object) -> str:
    """A config value as text: integers without '.0', missing as an em dash."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label(key: tuple, named: list[str]) -> str:
    variant, n_kv, params, backend, interpreted = key
    label = axis_value(variant)
    if "n_kv_heads" in named:
        label += f" kv={axis_value(n_kv)}"
    if "params" in named and axis_value(params) not in ("—", "{}"):
        label += f" {params}"
    return f"{label} · {axis_value(backend)}" + (" (interpreted †)" if interpreted else "")


def _styles(keys: list[tuple]) -> dict[tuple, tuple]:
    """(color, marker) for each line key."""
    families = list(dict.fromkeys(tuple(map(str, k[:3])) for k in keys))
    backends = sorted({str(k[3]) for k in keys})
    styles = {}
    for key in keys:
        family = matplotlib.colormaps[_FAMILIES[families.index(tuple(map(str, key[:3]))) % len(_FAMILIES)]]
        b = backends.index(str(key[3]))
        shade = 0.85 - 0.4 * b / max(len(backends) - 1, 1)
        styles[key] = (family(shade), _MARKERS[b % len(_MARKERS)])
    return styles


def panel_groups(data: pd.DataFrame, max_panels: int = MAX_PANELS) -> tuple[list[str], list, int]:
    """(GROUP_AXES that vary, the [(key, rows)] drawn: the most populated first-sorted, all groups)."""
    split = [a for a in GROUP_AXES if data[a].nunique(dropna=False) > 1]
    if not split:
        return split, [((), data)], 1
    groups = list(data.groupby(split, dropna=False, sort=True))
    if len(groups) > max_panels:
        biggest = sorted(range(len(groups)), key=lambda i: -len(groups[i][1]))[:max_panels]
        return split, [groups[i] for i in sorted(biggest)], len(groups)
    return split, groups, len(groups)


def drawn_lines(data: pd.DataFrame, max_lines: int = MAX_LINES) -> tuple[pd.DataFrame, int]:
    """(the rows of the lines drawn, how many lines there are). Over `max_lines`, the fastest lines are
    drawn: by the geometric mean of their latency over the median of all lines at the same shape and
    length (so a line is not favoured for lacking the long lengths); interpreted lines come last."""
    lines = data.groupby(list(LINE_AXES), dropna=False, sort=False).ngroup()
    n_lines = int(lines.max()) + 1 if len(lines) else 0
    if n_lines <= max_lines:
        return data, n_lines
    log_latency = np.log(data["latency_ms"].astype(float))
    points = [data[a].astype(str) for a in (*GROUP_AXES, "seq_len")]
    relative = log_latency - log_latency.groupby(points, dropna=False).transform("median")
    score = relative.groupby(lines).mean() + data["interpreted"].groupby(lines).first().astype(float) * 1e9
    return data[lines.isin(score.nsmallest(max_lines).index)], n_lines


def legend(fig: Figure, handles: dict[str, object]) -> None:
    """One legend right of the subplots, in as many columns as it needs to fit."""
    columns = max(1, math.ceil(len(handles) / LEGEND_ROWS))
    fig.legend(
        list(handles.values()), list(handles), loc="outside right center", fontsize="small", ncols=columns
    )


def latency_figure(rows: pd.DataFrame, title: str) -> Figure | None:
    """Log-log latency against seq_len of one phase's ok rows; None when no row has a positive latency.

    One subplot per combination of the GROUP_AXES that vary (at most MAX_PANELS, the most populated),
    one line per LINE_AXES value (at most MAX_LINES, the fastest), the p20–p80 band shaded.
    Interpreted rows (`interpreted` already a bool column) are drawn dashed with hollow markers.
    """
    data = rows[(rows["latency_ms"] > 0) & (rows["seq_len"] > 0)]
    if data.empty:
        return None
    data = data.sort_values([*LINE_AXES, "seq_len"], na_position="last", kind="stable")
    data, _ = drawn_lines(data)
    split, groups, _ = panel_groups(data)
    named = [a for a in ("n_kv_heads", "params") if data[a].nunique(dropna=False) > 1]
    styles = _styles([k for k, _ in data.groupby(list(LINE_AXES), dropna=False, sort=False)])

    ncols = min(len(groups), 3)
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.8 * ncols + 2.8, 3.6 * nrows + 0.4), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False, sharey=True).flat)
    handles: dict[str, object] = {}
    for ax, (group_key, group) in zip(axes, groups, strict=False):
        for key, line in group.groupby(list(LINE_AXES), dropna=False, sort=False):
            color, marker = styles[key]
            interpreted = bool(key[-1])
            (handle,) = ax.plot(
                line["seq_len"],
                line["latency_ms"],
                color=color,
                marker=marker,
                linestyle="--" if interpreted else "-",
                markerfacecolor="none" if interpreted else color,
            )
            band = line[["latency_ms_p20", "latency_ms_p80"]].astype(float)
            if len(line) > 1 and band.notna().all().all():
                ax.fill_between(line["seq_len"], band.iloc[:, 0], band.iloc[:, 1], color=color, alpha=0.15)
            handles.setdefault(_label(key, named), handle)
        log_scale(ax, "x")
        log_scale(ax, "y")
        length_ticks(ax, group["seq_len"])
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("latency (ms)")
        if split:
            ax.set_title(shape_title(split, group_key), fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    legend(fig, handles)
    return fig


def figure_svg(fig: Figure) -> str:
    """A figure as the text of one `<svg>` element (text kept as text, no date: reproducible)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def latency_svg(rows: pd.DataFrame, title: str) -> str | None:
    """`latency_figure` as inline SVG, or None."""
    fig = latency_figure(rows, title)
    return None if fig is None else figure_svg(fig)
