"""The sweep report: a self-contained `index.html` and a short `summary.md` from a results dataset.

Both are rendered from one list of blocks (headings, notes, tables), so they state the same numbers;
the plots, the long tables and the full tracebacks appear in the HTML only. Reads Parquet or a
DataFrame and imports neither torch nor triton (docs/architecture.md §1). The sections live in their own
modules: latency, speed (against a baseline), dispatch (the kernel SDPA picked), roofline, memory, quality,
kv_cache, accuracy, failures.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.accuracy import accuracy_blocks
from analysis.baseline import DEFAULT_BASELINE, Baseline
from analysis.blocks import Block, Cell, Table, fmt
from analysis.dispatch import dispatch_blocks
from analysis.failures import failures_blocks
from analysis.kv_cache import kv_cache_blocks
from analysis.latency import latency_blocks
from analysis.memory import memory_blocks
from analysis.nodes import nodes_blocks
from analysis.quality import quality_blocks
from analysis.render import render_html, render_markdown
from analysis.roofline import ceilings, roofline_blocks, roofline_rows
from analysis.rows import SELECTION_RULE, distinct, latest_per_trial, load_results, point_label
from analysis.schema import PHASES, STATUSES, TRAINED_PHASES
from analysis.speed import glance_blocks

SELECTION_RULE_SHORT = (
    "Selection rule: each trial counts once, as its latest ok row (else its latest row); "
    "the status table counts every row."
)
THROTTLED_ROWS = 20
ENVIRONMENT = (
    ("device", "device"),
    ("host", "host"),
    ("driver_version", "driver"),
    ("torch_version", "torch"),
    ("triton_version", "triton"),
    ("code_version", "code version"),
)


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    seconds: dict[str, float] = field(default_factory=dict, compare=False)  # build time per section


def _phases(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["phase"]))
    return [p for p in PHASES if p in present] + sorted(p for p in present if p not in PHASES)


def _ceilings_text(kept: pd.DataFrame) -> str:
    roofs = ceilings(roofline_rows(kept))
    if roofs.empty:
        return "—"
    parts = []
    for device, rows in roofs.groupby("device", sort=True):
        matmul = ", ".join(f"{r.dtype} {fmt(r.peak_tflops)}" for r in rows.itertuples())
        parts.append(f"{device}: matmul TFLOP/s {matmul}; copy {fmt(rows['peak_gbps'].median())} GB/s")
    return "; ".join(parts)


def _clocks_text(kept: pd.DataFrame) -> str:
    """Per GPU: SM and memory clocks, temperature and power over the rows NVML read, and how many rows
    throttled; '—' without readings."""
    read = kept[kept["sm_clock_mhz"].notna()]
    if read.empty:
        return "— (no NVML readings: a CPU, or no nvidia-ml-py)"
    parts = []
    for device, rows in read.groupby("device", sort=True):
        sm, memory = rows["sm_clock_mhz"].astype(float), rows["mem_clock_mhz"].astype(float)
        throttled = int(rows["throttled"].eq(True).sum())
        parts.append(
            f"{device}: SM {fmt(sm.min())}–{fmt(sm.max())} MHz (median {fmt(sm.median())}), memory "
            f"{fmt(memory.median())} MHz, up to {int(rows['temp_c'].max())} °C, "
            f"{fmt(rows['power_w'].median())} W median; {throttled} of {len(rows)} rows throttled"
        )
    return "; ".join(parts)


def _throttled(kept: pd.DataFrame) -> list[Block]:
    """The rows whose GPU throttled around their timed calls (their latency may be slow for it)."""
    throttled = kept[kept["throttled"].eq(True)]
    if throttled.empty:
        return []
    rows = throttled.head(THROTTLED_ROWS)
    table = Table(["variant", "backend", "phase", "point", "SM MHz", "°C", "W"])
    for _, r in rows.iterrows():
        cells = [fmt(r["sm_clock_mhz"]), str(int(r["temp_c"])), fmt(r["power_w"])]
        table.add([r["variant"], r["backend"], r["phase"], point_label(r), *map(Cell, cells)])
    note = f"Rows whose GPU throttled around the timed calls ({len(throttled)}; the first {len(rows)} shown)."
    return [Block("p", note), Block("table", table)]


def _environment(df: pd.DataFrame, kept: pd.DataFrame) -> list[Block]:
    stamps = df["timestamp"].dropna()
    span = f"{stamps.min():%Y-%m-%d %H:%M:%S} – {stamps.max():%Y-%m-%d %H:%M:%S} UTC" if len(stamps) else "—"
    facts = Table(["", ""])
    for column, label in ENVIRONMENT:
        facts.add([label, distinct(df[column])])
    facts.add(["measured ceilings", _ceilings_text(kept)])
    facts.add(["GPU clocks", _clocks_text(kept)])
    facts.add(["sweep", distinct(df["sweep"])])
    facts.add(["rows", f"{len(df)} in the dataset, {len(kept)} kept by the selection rule"])
    facts.add(["time range", span])
    return [
        Block("h2", "Environment"),
        Block("table", facts),
        Block("p", SELECTION_RULE, markdown=False),
        Block("p", SELECTION_RULE_SHORT, html=False),
        *_throttled(kept),
    ]


def _overview(df: pd.DataFrame, kept: pd.DataFrame) -> list[Block]:
    counts = Table(["status", "rows (all runs)", "kept"])
    all_counts, kept_counts = df["status"].value_counts(), kept["status"].value_counts()
    for status in [*STATUSES, *sorted(set(all_counts.index) - set(STATUSES))]:
        if all_counts.get(status, 0):
            counts.add([status, Cell(str(all_counts[status])), Cell(str(kept_counts.get(status, 0)))])
    runs = (
        df.groupby("run_id", dropna=False)
        .agg(
            sweep=("sweep", distinct),
            rows=("status", "size"),
            ok=("status", lambda s: int(s.eq("ok").sum())),
            first=("timestamp", "min"),
            last=("timestamp", "max"),
            code=("code_version", distinct),
        )
        .sort_values("first")
    )
    run_table = Table(["run_id", "sweep", "rows", "ok", "first", "last", "code version"])
    for run_id, r in runs.iterrows():
        times = [f"{t:%Y-%m-%d %H:%M}" if pd.notna(t) else "—" for t in (r["first"], r["last"])]
        run_table.add([run_id, r["sweep"], Cell(str(r["rows"])), Cell(str(r["ok"])), *times, r["code"]])
    return [
        Block("h2", "Status and runs"),
        Block("table", counts),
        Block("table", run_table, markdown=False),
        *nodes_blocks(df),
    ]


def _phase(phase: str, rows: pd.DataFrame, baseline: Baseline) -> list[Block]:
    """The phase's points in a line, how each variant and backend compares, the kernel SDPA picked,
    then latency in detail."""
    latency = latency_blocks(phase, rows)
    if not rows["status"].eq("ok").any():
        return [Block("h2", f"Phase: {phase}"), *latency]
    compared = [*glance_blocks(phase, rows, baseline), *dispatch_blocks(phase, rows)]
    return [Block("h2", f"Phase: {phase}"), latency[0], *compared, *latency[1:]]


def build_report(
    results: str | Path | pd.DataFrame,
    out_dir: str | Path,
    *,
    title: str | None = None,
    baseline: str | Baseline = DEFAULT_BASELINE,
) -> ReportPaths:
    """Write `out_dir/index.html` (self-contained, opens offline) and `out_dir/summary.md`.

    `results` is a sweep's dataset directory (what `read_results` takes) or its rows as a DataFrame.
    Several runs are reported together under SELECTION_RULE. `baseline` ('best', 'VARIANT/BACKEND':
    analysis.baseline) is what speedups are measured against. Raises ValueError, before writing
    anything, when there is no row or the baseline is malformed (BaselineError: it names a variant or
    backend without any row).
    """
    baseline = Baseline.parse(baseline)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    df = load_results(results)
    baseline.check(df)
    kept = latest_per_trial(df)
    seconds["load and select"] = time.perf_counter() - start
    title = title or f"attnsweep report: {distinct(df['sweep'])}"
    speed_phases = [p for p in _phases(kept) if p not in TRAINED_PHASES]  # no latency: see Quality
    sections: list[tuple[str, Callable[[], list[Block]]]] = [
        ("environment", lambda: _environment(df, kept) + _overview(df, kept)),
        *((f"phase {p}", lambda p=p: _phase(p, kept[kept["phase"].eq(p)], baseline)) for p in speed_phases),
        ("roofline", lambda: roofline_blocks(kept)),
        ("memory", lambda: memory_blocks(kept, baseline.memory_backend)),
        ("quality", lambda: quality_blocks(kept)),
        ("kv cache", lambda: kv_cache_blocks(kept)),
        ("accuracy", lambda: accuracy_blocks(kept)),
        ("failures", lambda: failures_blocks(df, kept)),
    ]
    blocks: list[Block] = []
    for name, section in sections:
        start = time.perf_counter()
        blocks += section()
        seconds[name] = time.perf_counter() - start
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(html=out / "index.html", markdown=out / "summary.md", seconds=seconds)
    paths.html.write_text(render_html(title, blocks), encoding="utf-8")
    paths.markdown.write_text(render_markdown(title, blocks), encoding="utf-8")
    seconds["render and write"] = time.perf_counter() - start
    return paths
