"""Latency-versus-sequence-length figures for the report, as inline SVG text.

Figures are built with `matplotlib.figure.Figure` directly, never through pyplot: nothing needs a
display, no global figure registry fills up, and a process that already uses pyplot keeps its backend.
"""

import io
import math

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

# Axes shared by every line of one subplot; when one varies within a phase it splits the subplots.
GROUP_AXES = ("batch", "n_heads", "head_dim", "dtype", "causal")
# One line per distinct value of these; n_kv_heads and params are named in the legend when they vary.
LINE_AXES = ("variant", "n_kv_heads", "params", "backend", "interpreted")
# A hue family per (variant, n_kv_heads, params), a shade and a marker per backend.
_FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


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


def latency_figure(rows: pd.DataFrame, title: str) -> Figure | None:
    """Log-log latency against seq_len of one phase's ok rows; None when no row has a positive latency.

    One subplot per combination of the GROUP_AXES that vary, one line per LINE_AXES value, the
    p20–p80 band shaded. Interpreted rows (`interpreted` already a bool column) are drawn dashed
    with hollow markers.
    """
    data = rows[(rows["latency_ms"] > 0) & (rows["seq_len"] > 0)]
    if data.empty:
        return None
    data = data.sort_values([*LINE_AXES, "seq_len"], na_position="last", kind="stable")
    split = [a for a in GROUP_AXES if data[a].nunique(dropna=False) > 1]
    groups = list(data.groupby(split, dropna=False, sort=True)) if split else [((), data)]
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
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(group["seq_len"].unique())
        if len(ticks) <= 8:
            ax.set_xticks(ticks, [axis_value(t) for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("latency (ms)")
        if split:
            ax.set_title(
                ", ".join(f"{a}={axis_value(v)}" for a, v in zip(split, group_key, strict=True)),
                fontsize="medium",
            )
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")
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
