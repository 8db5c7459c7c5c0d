"""The report's Quality section: what the trained tiny LMs learned, what that costs, and head pruning.

Phase `quality` trains a small causal LM whose attention layers are a variant's reference layer on a
synthetic task and scores it on held-out data; phase `prune` trains the same model, then masks heads
greedily, one row per number of heads kept. Replicates differ only by `seed`, so a configuration is
everything else (the `quality` JSON holds the task and training settings, the seed excluded).
"""

import html
import json
import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value, figure_svg
from analysis.schema import TRAINED_PHASES

# A configuration of the trained phases: seeds of equal configurations are pooled.
CONFIG = ["task", "quality", "variant", "params", "n_heads", "n_kv_heads", "head_dim", "batch", "seq_len"]
# A prefill row measures a quality configuration's layer when these are equal (any backend and dtype).
LATENCY_KEYS = ["variant", "params", "n_heads", "n_kv_heads", "head_dim", "batch", "seq_len", "causal"]
COSTS = (
    ("kv_bytes_per_token", "KV cache per token and layer (bytes)", "KV bytes/token"),
    ("latency_ms", "prefill latency (ms)", "prefill ms"),
)
LOG_SCALE_RATIO = 30
NO_LATENCY = "no measured prefill row of the same shape; interpreted Triton rows are never used"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", ":", "-.")


def _sparse_label(value: float, _position: object) -> str:
    """Labels for the minor ticks of a log axis at 2 and 5 times a power of ten only (no overlap)."""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return fmt(value) if round(mantissa, 6) in (2.0, 5.0) else ""


def pareto_front(cost: object, accuracy: object) -> np.ndarray:
    """Boolean mask of the points no other point dominates (lower cost and higher accuracy are better).

    j dominates i when cost_j <= cost_i and accuracy_j >= accuracy_i with one of them strict, so equal
    points are all on the front. A point with a NaN cost or accuracy is never on it and dominates nothing.
    """
    c, a = np.asarray(cost, dtype=float), np.asarray(accuracy, dtype=float)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"cost and accuracy must be 1-D of one length, got {c.shape} and {a.shape}")
    valid = ~(np.isnan(c) | np.isnan(a))
    cv, av = c[valid], a[valid]
    no_worse = (cv[None, :] <= cv[:, None]) & (av[None, :] >= av[:, None])  # [i, j]: j no worse than i
    better = (cv[None, :] < cv[:, None]) | (av[None, :] > av[:, None])
    mask = np.zeros(c.shape, dtype=bool)
    mask[valid] = ~(no_worse & better).any(axis=1)
    return mask


def _canonical(params: object) -> str:
    """One spelling per params JSON, so a prefill row matches whatever wrote it."""
    text = "" if params is None or pd.isna(params) else str(params)
    try:
        return json.dumps(json.loads(text or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


def _settings(quality: str) -> dict[tuple[str, str], str]:
    """(section, key) -> value as text of a `quality` JSON: its task parameters, then training settings."""
    try:
        spec = json.loads(quality)
    except ValueError:
        return {("training", "quality"): quality} if quality else {}
    flat = {("task", k): v for k, v in spec.get("task_params", {}).items()}
    flat.update({("training", k): v for k, v in spec.get("train", {}).items()})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}


def _training(frame: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """Per row, the settings that differ between the configurations of its task; per task, the rest."""
    labels, common = pd.Series("", index=frame.index, dtype=object), []
    quality = frame["quality"].fillna("").astype(str)
    for task, rows in quality.groupby(frame["task"].fillna("—").astype(str), sort=True):
        settings = {q: _settings(q) for q in rows.unique()}
        keys = list(dict.fromkeys(k for s in settings.values() for k in s))
        varying = [k for k in keys if len({s.get(k, "—") for s in settings.values()}) > 1]
        first = next(iter(settings.values()))
        fixed = [
            f"{section} "
            + " ".join(f"{k[1]}={first[k]}" for k in keys if k[0] == section and k not in varying)
            for section in ("task", "training")
            if any(k[0] == section and k not in varying for k in keys)
        ]
        common.append(f"{task}: {'; '.join(fixed) or 'no settings recorded'}")
        for i, q in rows.items():
            labels[i] = " ".join(f"{k[1]}={settings[q].get(k, '—')}" for k in varying)
    return labels, common


def _shown(frame: pd.DataFrame) -> list[str]:
    """The optional label parts that tell configurations apart."""
    shown = [a for a in ("seq_len", "batch") if frame[a].nunique(dropna=False) > 1]
    params = frame["params"].map(axis_value)
    if params.nunique() > 1 or (~params.isin(["—", "{}"])).any():
        shown.append("params")
    return shown + (["training"] if frame["training"].astype(bool).any() else [])


def _label(r: pd.Series, shown: list[str]) -> str:
    label = f"{r['variant']} H={axis_value(r['n_heads'])}/{axis_value(r['n_kv_heads'])}"
    label += f" d={axis_value(r['head_dim'])}"
    label += f" {r['params']}" if "params" in shown and axis_value(r["params"]) not in ("—", "{}") else ""
    label += f" N={axis_value(r['seq_len'])}" if "seq_len" in shown else ""
    label += f" B={axis_value(r['batch'])}" if "batch" in shown else ""
    return label + (f" {r['training']}" if "training" in shown and r["training"] else "")


def _first(values: pd.Series) -> object:
    present = values.dropna()
    return present.iloc[0] if len(present) else None


def quality_summary(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of the ok quality rows (seeds pooled), with its measured prefill latency:
    the fastest ok, not interpreted prefill row of equal LATENCY_KEYS (`latency_ms`, `latency_backend`)."""
    ok = kept[kept["phase"].eq("quality") & kept["status"].eq("ok") & kept["accuracy"].notna()]
    records = []
    for key, g in ok.groupby(CONFIG, dropna=False, sort=False):
        acc = g["accuracy"].astype(float)
        records.append(
            {
                **dict(zip(CONFIG, key, strict=True)),
                "causal": bool(g["causal"].eq(True).any()),
                "seeds": len(g),
                "accuracy": acc.mean(),
                "std": acc.std(ddof=1) if len(g) > 1 else np.nan,
                "min": acc.min(),
                "loss": g["loss"].astype(float).mean(),
                "model_params": _first(g["model_params"]),
                "kv_bytes_per_token": _first(g["kv_bytes_per_token"]),
            }
        )
    summary = pd.DataFrame.from_records(records)
    if summary.empty:
        return summary
    prefill = kept[
        kept["phase"].eq("prefill")
        & kept["status"].eq("ok")
        & ~kept["interpreted"].eq(True)
        & (kept["latency_ms"].astype(float) > 0)
    ].assign(params=lambda f: f["params"].map(_canonical), causal=lambda f: f["causal"].eq(True))
    latency, backend = [], []
    for _, r in summary.iterrows():
        match = pd.Series(True, index=prefill.index)
        for k in LATENCY_KEYS:
            match &= prefill[k] == (_canonical(r[k]) if k == "params" else r[k])
        best = prefill[match].sort_values("latency_ms", kind="stable").head(1)
        latency.append(float(best["latency_ms"].iloc[0]) if len(best) else np.nan)
        backend.append(str(best["backend"].iloc[0]) if len(best) else "")
    summary = summary.assign(latency_ms=latency, latency_backend=backend)
    summary["training"] = _training(summary)[0]
    return summary


def _not_ok_note(rows: pd.DataFrame, phase: str) -> list[Block]:
    failed = rows[rows["phase"].eq(phase) & ~rows["status"].eq("ok")]
    if failed.empty:
        return []
    counts = ", ".join(f"{s}: {n}" for s, n in failed["status"].value_counts().sort_index().items())
    return [Block("p", f"{len(failed)} {phase} rows did not finish ok ({counts}); see Failures.")]


def _accuracy_blocks(summary: pd.DataFrame, shown: list[str]) -> list[Block]:
    varying = [a for a in ("params", "seq_len", "batch", "training") if a in shown]
    has_latency = summary["latency_ms"].notna().any()
    names = {"params": "params", "seq_len": "seq len", "batch": "batch", "training": "training"}
    table = Table(
        ["task", "variant", "heads", "kv heads", "head dim", *(names[a] for a in varying), "seeds"]
        + ["accuracy", "min", "loss", "model params", "KV bytes/token"]
        + (["prefill ms", "prefill backend"] if has_latency else [])
    )
    for _, r in summary.sort_values(["task", "accuracy"], ascending=[True, False], kind="stable").iterrows():
        spread = f" ± {r['std']:.3f}" if r["seeds"] >= 2 else ""
        cells = [axis_value(r["task"]), r["variant"], Cell(axis_value(r["n_heads"]))]
        cells += [Cell(axis_value(r["n_kv_heads"])), Cell(axis_value(r["head_dim"]))]
        cells += [axis_value(r[a]) for a in varying] + [Cell(str(r["seeds"]))]
        cells += [Cell(f"{r['accuracy']:.3f}{spread}"), Cell(f"{r['min']:.3f}"), Cell(fmt(r["loss"]))]
        cells += [Cell(axis_value(r["model_params"])), Cell(axis_value(r["kv_bytes_per_token"]))]
        if has_latency:
            cells += [Cell(fmt(r["latency_ms"])), r["latency_backend"] or "—"]
        table.add(cells)
    words = {"seq_len": "task length {} tokens", "batch": "training batch {}"}
    fixed = [w.format(axis_value(summary[a].iloc[0])) for a, w in words.items() if a not in shown]
    note = (
        f"{len(summary)} configurations, {int(summary['seeds'].sum())} ok runs. Accuracy: held-out, on the "
        "labelled positions; mean ± sample standard deviation over seeds, min: the worst seed; loss: mean "
        "final training loss. Attention layers: the variant's reference layer."
    )
    common = ". ".join(_training(summary)[1])
    settings = f"Common settings{' (' + ', '.join(fixed) + ')' if fixed else ''}. {common}."
    return [Block("h3", "Accuracy by variant and heads"), Block("p", note), Block("p", settings)] + [
        Block("table", table)
    ]


def _fronts(points: pd.DataFrame) -> list[tuple[str, tuple[str, str, str], pd.DataFrame, pd.DataFrame]]:
    """Per task and cost: the points with that cost, and their Pareto front sorted by cost."""
    fronts = []
    for task, rows in points.groupby(points["task"].fillna("—").astype(str), sort=True):
        for cost in COSTS:
            data = rows[rows[cost[0]].astype(float) > 0]
            if data.empty:
                continue
            front = data[pareto_front(data[cost[0]], data["accuracy"])]
            fronts.append((task, cost, data, front.sort_values([cost[0], "accuracy"], kind="stable")))
    return fronts


def _cost_svg(points: pd.DataFrame, fronts: list, shown: list[str]) -> str:
    tasks = list(dict.fromkeys(task for task, *_ in fronts))
    costs = [c for c in COSTS if any(f[1] == c for f in fronts)]
    variants = sorted(points["variant"].astype(str).unique())
    shapes = list(dict.fromkeys(_label(r, []).split(" ", 1)[1] for _, r in points.iterrows()))
    colors = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(5.2 * len(costs) + 2.8, 3.8 * len(tasks) + 0.6), layout="constrained")
    axes = fig.subplots(len(tasks), len(costs), squeeze=False)
    for task, cost, data, front in fronts:
        ax = axes[tasks.index(task)][costs.index(cost)]
        column, xlabel, _ = cost
        for _, r in data.iterrows():
            color = colors(variants.index(str(r["variant"])) % 10)
            marker = _MARKERS[shapes.index(_label(r, []).split(" ", 1)[1]) % len(_MARKERS)]
            yerr = 0.0 if pd.isna(r["std"]) else r["std"]
            ax.errorbar(r[column], r["accuracy"], yerr=yerr, fmt=marker, color=color, capsize=3)
        ax.step(front[column], front["accuracy"], where="post", color="black", linestyle=":", linewidth=1)
        ax.scatter(front[column], front["accuracy"], s=160, facecolors="none", edgecolors="black")
        values = data[column].astype(float)
        log = column == "latency_ms" or values.max() / values.min() > LOG_SCALE_RATIO
        if log:
            ax.set_xscale("log")
            # Plain numbers; within one decade the minor ticks are the only ones, so they get the labels.
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
            narrow = values.max() / values.min() < 10
            ax.xaxis.set_minor_formatter(FuncFormatter(_sparse_label) if narrow else NullFormatter())
        ax.set_xlabel(xlabel.replace(")", ", log scale)") if log else xlabel)
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{task}: accuracy against {cost[2]}", fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_visible(False)
    handles = [
        Line2D([], [], color=colors(i % 10), marker="o", linestyle="", label=v)
        for i, v in enumerate(variants)
    ]
    if len(shapes) > 1:
        handles += [
            Line2D([], [], color="grey", marker=_MARKERS[i % len(_MARKERS)], linestyle="", label=s)
            for i, s in enumerate(shapes)
        ]
    handles.append(
        Line2D([], [], color="black", linestyle=":", marker="o", markerfacecolor="none", label="Pareto front")
    )
    fig.legend(handles=handles, loc="outside right center", fontsize="small")
    fig.suptitle("Quality against cost (mean over seeds, bars: standard deviation)")
    return figure_svg(fig)


def _cost_blocks(summary: pd.DataFrame, shown: list[str]) -> list[Block]:
    blocks = [Block("h3", "Quality vs cost")]
    fronts = _fronts(summary)
    if not fronts:
        return blocks + [Block("p", "No quality configuration has a KV-cache size or a measured latency.")]
    missing = int(summary["latency_ms"].isna().sum())
    note = (
        "Cost of a configuration: its KV cache per token from the variant's cost model, and its prefill "
        "latency: the fastest ok prefill row of equal variant, params, heads, kv heads, head dim, batch, "
        "sequence length and causal (any backend and dtype). On the Pareto front: no other configuration "
        "of the task costs no more and is at least as accurate, one of them strictly."
    )
    if missing:
        note += f" {missing} of {len(summary)} configurations have no latency ({NO_LATENCY})."
    caption = "Colour: variant; marker: heads; circled and joined by the dotted step line: the Pareto front."
    figure = (
        f"<figure>{_cost_svg(summary, fronts, shown)}<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
    table = Table(["task", "cost", "configuration", "accuracy", "cost value", "backend"])
    for task, (_, _, name), _, front in fronts:
        for _, r in front.iterrows():
            latency = name == "prefill ms"
            value = fmt(r["latency_ms"]) if latency else axis_value(r["kv_bytes_per_token"])
            backend = r["latency_backend"] if latency else "—"
            table.add([task, name, _label(r, shown), Cell(f"{r['accuracy']:.3f}"), Cell(value), backend])
    return blocks + [
        Block("p", note),
        Block("raw", figure),
        Block("p", "Pareto front:"),
        Block("table", table),
    ]


def _pruned(kept: pd.DataFrame) -> pd.DataFrame:
    """The ok prune rows with an accuracy, each with its configuration's label (`config`) and task."""
    ok = kept[kept["phase"].eq("prune") & kept["status"].eq("ok") & kept["heads_kept"].notna()]
    ok = ok[ok["accuracy"].notna()]
    if ok.empty:
        return ok
    ok = ok.assign(training=_training(ok)[0])
    shown = _shown(ok)
    return ok.assign(config=[_label(r, shown) for _, r in ok.iterrows()], task=ok["task"].fillna("—"))


def _by_config(ok: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(task, configuration, its rows), sorted by task and configuration."""
    configs = sorted(ok.groupby(["task", "config"], sort=True).groups)
    return [(task, config, ok[ok["task"].eq(task) & ok["config"].eq(config)]) for task, config in configs]


def _seed_lines(rows: pd.DataFrame) -> list[tuple[object, pd.DataFrame]]:
    """Per seed of a configuration's rows: (seed, its rows in order of heads kept, the last of each count)."""
    return [
        (seed, line.sort_values("heads_kept").drop_duplicates("heads_kept", keep="last"))
        for seed, line in rows.groupby("seed", dropna=False, sort=True)
    ]


def _prune_svg(configs: list[tuple[str, str, pd.DataFrame]]) -> str:
    """Accuracy against heads kept, one panel per task: a colour per configuration, a line style per seed."""
    tasks = list(dict.fromkeys(task for task, _, _ in configs))
    colors = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(5.6 * len(tasks) + 3.2, 4.0), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    handles: dict[str, object] = {}
    for i, (task, config, rows) in enumerate(configs):
        ax, color = axes[tasks.index(task)], colors(i % 10)
        for n, (_, line) in enumerate(_seed_lines(rows)):
            (handle,) = ax.plot(
                line["heads_kept"],
                line["accuracy"],
                color=color,
                marker="o",
                markersize=3,
                linestyle=_LINES[n % len(_LINES)],
            )
            handles.setdefault(config, handle)
    for ax, task in zip(axes, tasks, strict=True):
        ax.invert_xaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("heads kept (all layers)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(task, fontsize="medium")
        ax.grid(True, alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")
    fig.suptitle("Head pruning: held-out accuracy as heads are removed")
    return figure_svg(fig)


def _removal_cells(line: pd.DataFrame, kept_values: list[int]) -> list[Cell]:
    """One seed's accuracy at each number of heads kept, with the head whose removal led there."""
    by_heads = line.set_index(line["heads_kept"].astype(int))
    cells = []
    for h in kept_values:
        if h not in by_heads.index:
            cells.append(Cell("—"))
            continue
        removed = by_heads.loc[h, "removed_head"]
        sub = f"removed {removed}" if isinstance(removed, str) and removed else ""
        cells.append(Cell(f"{by_heads.loc[h, 'accuracy']:.3f}", sub))
    return cells


def _prune_table(ok: pd.DataFrame, configs: list[tuple[str, str, pd.DataFrame]]) -> Table:
    """A row per configuration and seed, a column per number of heads kept; the mean over several seeds."""
    kept_values = sorted(ok["heads_kept"].astype(int).unique(), reverse=True)
    table = Table(["task", "configuration", "seed", *(str(h) for h in kept_values)])
    for task, config, rows in configs:
        for seed, line in _seed_lines(rows):
            table.add([task, config, axis_value(seed), *_removal_cells(line, kept_values)])
        if rows["seed"].nunique() > 1:
            mean = rows.groupby(rows["heads_kept"].astype(int))["accuracy"].mean()
            n = rows["seed"].nunique()
            means = [Cell(f"{mean[h]:.3f}" if h in mean.index else "—") for h in kept_values]
            table.add([task, config, f"mean of {n} seeds", *means])
    return table


def _prune_blocks(kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h3", "Head pruning")]
    ok = _pruned(kept)
    if ok.empty:
        return blocks + [Block("p", "No ok prune rows.")] + _not_ok_note(kept, "prune")
    configs = _by_config(ok)
    note = (
        "Each model is trained once, then heads are removed greedily, the least important first, with the "
        "importance |∂L/∂mask| of each head's mask on training data re-estimated after every removal "
        "(Michel et al. 2019), keeping at least one head per layer. Columns: heads kept over all layers; "
        "one row per seed."
    )
    caption = "Colour: configuration; line style: seed; left to right: heads removed."
    figure = f"<figure>{_prune_svg(configs)}<figcaption>{html.escape(caption)}</figcaption></figure>"
    table = _prune_table(ok, configs)
    return (
        blocks + [Block("p", note), Block("raw", figure), Block("table", table)] + _not_ok_note(kept, "prune")
    )


def quality_blocks(kept: pd.DataFrame) -> list[Block]:
    """The Quality section from the kept rows (one per trial, any phases); [] without a trained-phase row."""
    if not kept["phase"].isin(TRAINED_PHASES).any():
        return []
    blocks = [Block("h2", "Quality")]
    summary = quality_summary(kept)
    if summary.empty:
        note = "No ok quality rows." if kept["phase"].eq("quality").any() else "Phase quality did not run."
        blocks += [Block("h3", "Accuracy by variant and heads"), Block("p", note)]
        blocks += _not_ok_note(kept, "quality")
    else:
        shown = _shown(summary)
        blocks += (
            _accuracy_blocks(summary, shown) + _not_ok_note(kept, "quality") + _cost_blocks(summary, shown)
        )
    if kept["phase"].eq("prune").any():
        blocks += _prune_blocks(kept)
    return blocks
