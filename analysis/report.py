"""The sweep report: a self-contained `index.html` and a short `summary.md` from a results dataset.

Both are rendered from one list of blocks (headings, notes, tables), so they state the same numbers;
the plots, the all-metrics tables and the full tracebacks appear in the HTML only. Reads Parquet or a
DataFrame and imports neither torch nor triton (DESIGN.md §1).
"""

import html
import numbers
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.blocks import Block, Cell, Table, fmt, mib
from analysis.kv_cache import kv_cache_blocks
from analysis.plots import GROUP_AXES, axis_value, latency_svg
from analysis.quality import TRAINED_PHASES, quality_blocks
from analysis.schema import COLUMNS, CONFIG_COLUMNS, STATUSES
from analysis.store import read_results

PHASE_ORDER = ("prefill", "decode", "train")
SHAPE_AXES = ("batch", "n_heads", "n_kv_heads", "head_dim", "dtype", "causal", "params")
AXIS_LABELS = {
    "batch": "batch",
    "n_heads": "heads",
    "n_kv_heads": "kv heads",
    "head_dim": "head dim",
    "dtype": "dtype",
    "causal": "causal",
    "params": "params",
}
ENVIRONMENT = (
    ("device", "device"),
    ("host", "host"),
    ("torch_version", "torch"),
    ("triton_version", "triton"),
    ("driver_version", "driver"),
    ("code_version", "code version"),
)
RATES = ("tflops", "gbps", "pct_peak")
DAGGER = "†"
SELECTION_RULE = (
    "Selection rule: each trial (trial_id) appears once, as its latest ok row (by timestamp, then run_id "
    "and attempt); a trial without any ok row appears as its latest row. The status table counts every "
    "row; all other tables show the kept rows only."
)
INTERPRETED_NOTE = (
    f"{DAGGER} Triton ran in its CPU interpreter: the output is checked but the latency "
    "means nothing; these rows are never ranked."
)


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path


def _sci(value: object) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.2e}"


def _spread(row: pd.Series) -> str:
    if pd.isna(row["latency_ms_p20"]) or pd.isna(row["latency_ms_p80"]):
        return ""
    return f"{fmt(row['latency_ms_p20'])}–{fmt(row['latency_ms_p80'])}"


def _text(value: object) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def error_summary(error: object, limit: int = 160) -> str:
    """The line that names the error: the first one, or a Python traceback's last (the exception)."""
    lines = [s.strip() for s in _text(error).strip().splitlines() if s.strip()]
    if not lines:
        return "(no message)"
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _distinct(series: pd.Series, limit: int = 6) -> str:
    values = [axis_value(v) for v in series.dropna().unique() if str(v) != ""]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more if values else "—"


def _point(row: pd.Series) -> str:
    causal = " causal" if row["causal"] is True or row["causal"] == 1 else ""
    heads = f"H={axis_value(row['n_heads'])}/{axis_value(row['n_kv_heads'])}"
    seed = f" seed={axis_value(row['seed'])}" if row["phase"] in TRAINED_PHASES else ""
    return (
        f"B={axis_value(row['batch'])} N={axis_value(row['seq_len'])} {heads} "
        f"d={axis_value(row['head_dim'])} {axis_value(row['dtype'])}{causal}{seed}"
    )


def load_results(results: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Every schema column present, `interpreted` a plain bool, timestamps UTC; 0 rows raise ValueError."""
    df = results.copy() if isinstance(results, pd.DataFrame) else read_results(results)
    if df.empty:
        where = "the DataFrame" if isinstance(results, pd.DataFrame) else str(results)
        raise ValueError(f"no result rows in {where}: nothing to report")
    for column in COLUMNS:
        if column not in df:
            df[column] = None
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    df["interpreted"] = df["interpreted"].eq(True)
    df["status"] = df["status"].fillna("unknown")
    df["phase"] = df["phase"].fillna("unknown")
    return df.reset_index(drop=True)


def latest_per_trial(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (SELECTION_RULE): its latest ok row, else its latest row."""
    config = df[list(CONFIG_COLUMNS)].astype(object).apply(lambda r: repr(tuple(r)), axis=1)
    key = df["trial_id"].astype(object).where(df["trial_id"].notna(), config)
    ordered = df.assign(_key=key, _ok=df["status"].eq("ok")).sort_values(
        ["_ok", "timestamp", "run_id", "attempt"], na_position="first", kind="stable"
    )
    kept = ordered.groupby("_key", sort=False).tail(1)
    return kept.drop(columns=["_key", "_ok"]).sort_index()


def _phases(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["phase"]))
    return [p for p in PHASE_ORDER if p in present] + sorted(p for p in present if p not in PHASE_ORDER)


def _overview(df: pd.DataFrame, kept: pd.DataFrame) -> list[Block]:
    runs = (
        df.groupby("run_id", dropna=False)
        .agg(
            sweep=("sweep", _distinct),
            rows=("status", "size"),
            ok=("status", lambda s: int(s.eq("ok").sum())),
            first=("timestamp", "min"),
            last=("timestamp", "max"),
            code=("code_version", _distinct),
        )
        .sort_values("first")
    )
    stamps = df["timestamp"].dropna()
    span = f"{stamps.min():%Y-%m-%d %H:%M:%S} – {stamps.max():%Y-%m-%d %H:%M:%S} UTC" if len(stamps) else "—"
    facts = Table(["", ""])
    facts.add(["sweep", _distinct(df["sweep"])])
    facts.add(["runs", f"{len(runs)}: " + _distinct(pd.Series(runs.index))])
    facts.add(["rows", f"{len(df)} in the dataset, {len(kept)} kept by the selection rule"])
    for column, label in ENVIRONMENT:
        facts.add([label, _distinct(df[column])])
    facts.add(["time range", span])
    counts = Table(["status", "rows (all runs)", "kept"])
    for status in [*STATUSES, *sorted(set(df["status"]) - set(STATUSES))]:
        n_all, n_kept = int(df["status"].eq(status).sum()), int(kept["status"].eq(status).sum())
        if n_all:
            counts.add([status, Cell(str(n_all)), Cell(str(n_kept))])
    run_table = Table(["run_id", "sweep", "rows", "ok", "first", "last", "code version"])
    for run_id, r in runs.iterrows():
        times = [f"{t:%Y-%m-%d %H:%M}" if pd.notna(t) else "—" for t in (r["first"], r["last"])]
        run_table.add([run_id, r["sweep"], Cell(str(r["rows"])), Cell(str(r["ok"])), *times, r["code"]])
    return [
        Block("table", facts),
        Block("p", SELECTION_RULE),
        Block("h3", "Status"),
        Block("table", counts),
        Block("h3", "Runs", markdown=False),
        Block("table", run_table, markdown=False),
    ]


def _best(ok: pd.DataFrame) -> pd.Series:
    """True for the fastest measured (not interpreted) row of each seq_len among rows of equal GROUP_AXES."""
    best = pd.Series(False, index=ok.index)
    measured = ok[~ok["interpreted"] & ok["latency_ms"].notna()]
    for _, group in measured.groupby([*GROUP_AXES, "seq_len"], dropna=False):
        if len(group) > 1:
            best[group["latency_ms"].astype(float).idxmin()] = True
    return best


def _backend(row_backend: object, interpreted: bool) -> str:
    return axis_value(row_backend) + (f" {DAGGER}" if interpreted else "")


def _phase(phase: str, rows: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", f"Phase: {phase}")]
    ok = rows[rows["status"].eq("ok")]
    if ok.empty:
        note = f"No ok rows in this phase ({len(rows)} failed or unsupported, see Failures)."
        return blocks + [Block("p", note)]
    vary = [a for a in SHAPE_AXES if ok[a].nunique(dropna=False) > 1]
    fixed = [
        f"{AXIS_LABELS[a]}={axis_value(ok[a].iloc[0])}"
        for a in SHAPE_AXES
        if a not in vary and not (a == "params" and axis_value(ok[a].iloc[0]) in ("—", "{}"))
    ]
    blocks.append(Block("p", f"{len(ok)} ok points. Same for all: {', '.join(fixed) or 'nothing'}."))
    svg = latency_svg(ok, f"{phase}: latency against sequence length")
    caption = "Shaded: p20–p80 of the timed runs."
    if ok["interpreted"].any():
        caption += f" Dashed, hollow markers ({DAGGER}): Triton's CPU interpreter, not comparable."
    if svg is None:
        blocks.append(Block("p", "No positive latency to plot.", markdown=False))
    else:
        blocks.append(Block("raw", f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"))

    order = [*GROUP_AXES, "variant", "backend", "n_kv_heads", "params", "interpreted", "seq_len"]
    ok = ok.sort_values(order, na_position="last", kind="stable")
    best = _best(ok)
    seq_lens = sorted(ok["seq_len"].dropna().unique())
    labels = ["variant", "backend", *(AXIS_LABELS[a] for a in vary)]
    pivot = Table(labels + [axis_value(s) for s in seq_lens])
    for key, line in ok.groupby(["variant", "backend", *vary, "interpreted"], dropna=False, sort=False):
        cells = [axis_value(key[0]), _backend(key[1], key[-1]), *(axis_value(v) for v in key[2:-1])]
        for s in seq_lens:
            at = line[line["seq_len"] == s]
            r = at.iloc[-1] if len(at) else None
            cells.append(Cell("—") if r is None else Cell(fmt(r["latency_ms"]), _spread(r), best[r.name]))
        pivot.add(cells, bool(key[-1]))
    notes = (
        "Median latency in ms{}; columns: sequence length in tokens; bold: the fastest measured variant "
        "and backend at that length among rows of equal batch, heads, head dim, dtype and causal."
    )
    blocks += [
        Block("h3", f"{phase}: latency (ms) by sequence length"),
        Block("p", notes.format(", p20–p80 under it"), markdown=False),
        Block("p", notes.format(""), html=False),
        Block("table", pivot),
    ]
    if ok["interpreted"].any():
        blocks.append(Block("p", INTERPRETED_NOTE))

    metrics = Table(
        labels
        + [
            "seq len",
            "latency ms",
            "p20–p80",
            "runs",
            "TFLOP/s",
            "GB/s",
            "% peak",
            "peak mem MiB",
            "KV cache MiB",
        ]
    )
    for _, r in ok.iterrows():
        cells = [axis_value(r["variant"]), _backend(r["backend"], r["interpreted"])]
        cells += [axis_value(r[a]) for a in vary] + [Cell(axis_value(r["seq_len"]))]
        cells += [Cell(fmt(r["latency_ms"]), best=bool(best[r.name])), Cell(_spread(r) or "—")]
        cells += [Cell(axis_value(r["n_samples"])), *(Cell(fmt(r[m])) for m in RATES)]
        cells += [Cell(mib(r["peak_mem_bytes"])), Cell(mib(r["kv_cache_bytes"]))]
        metrics.add(cells, bool(r["interpreted"]))
    return blocks + [
        Block("h3", f"{phase}: all metrics", markdown=False),
        Block("table", metrics, markdown=False),
    ]


def _accuracy(kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", "Accuracy")]
    rows = kept[kept["max_abs_err"].notna() | kept["rel_err"].notna()]
    if rows.empty:
        return blocks + [Block("p", "No row has an accuracy measurement.")]
    table = Table(["variant", "backend", "dtype", "points", "max abs err", "rel err", "worst rel err at"])
    for (variant, backend, dtype), g in rows.groupby(["variant", "backend", "dtype"], dropna=False):
        rel = g["rel_err"].astype(float)
        worst = "—" if rel.isna().all() else f"{g.loc[rel.idxmax(), 'phase']}, {_point(g.loc[rel.idxmax()])}"
        table.add(
            [
                variant,
                backend,
                dtype,
                Cell(str(len(g))),
                Cell(_sci(g["max_abs_err"].max())),
                Cell(_sci(rel.max())),
                worst,
            ]
        )
    note = (
        "Worst value over the kept rows that have one (interpreted rows included: their outputs are "
        "exact), against the variant's high-precision reference."
    )
    return blocks + [Block("p", note), Block("table", table)]


def _failure_rows(failed: pd.DataFrame) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("status", "variant", "backend", "phase", "point", "error"))
    items = []
    for _, r in failed.iterrows():
        cells = "".join(f"<td>{html.escape(axis_value(r[c]))}</td>" for c in ("status", "variant", "backend"))
        cells += f"<td>{html.escape(axis_value(r['phase']))}</td>"
        details = (
            f"<details><summary>{html.escape(error_summary(r['error']))}</summary>"
            f"<pre>{html.escape(_text(r['error']))}</pre></details>"
        )
        items.append(f"<tr>{cells}<td>{html.escape(_point(r))}</td><td>{details}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(items)}</tbody></table>"


def _failures(df: pd.DataFrame, kept: pd.DataFrame) -> list[Block]:
    blocks = [Block("h2", "Failures")]
    failed = kept[~kept["status"].isin(["ok", "unsupported"])].sort_values(
        ["status", "variant", "backend", "phase", "seq_len"], na_position="last", kind="stable"
    )
    hidden = int((~df["status"].isin(["ok", "unsupported"])).sum()) - len(failed)
    if hidden:
        blocks.append(
            Block(
                "p",
                f"{hidden} failed rows are not listed: the selection rule keeps another row "
                "of their trial (an ok one, or a later failure).",
            )
        )
    if failed.empty:
        blocks.append(Block("p", "No failures."))
    else:
        summary = Table(["status", "variant", "backend", "phase", "rows", "error (first of the group)"])
        for key, g in failed.groupby(["status", "variant", "backend", "phase"], dropna=False, sort=False):
            summary.add([*key, Cell(str(len(g))), error_summary(g["error"].iloc[0], 100)])
        blocks += [Block("table", summary, html=False), Block("raw", _failure_rows(failed))]
    unsupported = kept[kept["status"].eq("unsupported")]
    if not unsupported.empty:
        table = Table(["variant", "backend", "phase", "reason", "rows"])
        reasons = unsupported.assign(reason=unsupported["error"].map(error_summary))
        for key, g in reasons.groupby(["variant", "backend", "phase", "reason"], dropna=False):
            table.add([*key, Cell(str(len(g)))])
        blocks += [Block("h3", "Unsupported (by design, not failures)"), Block("table", table)]
    return blocks


def _html_table(table: Table) -> str:
    def cell(c: object) -> str:
        if isinstance(c, Cell):
            sub = f"<small>{html.escape(c.sub)}</small>" if c.sub else ""
            return f'<td class="num{" best" if c.best else ""}">{html.escape(c.text)}{sub}</td>'
        return f"<td>{html.escape(axis_value(c))}</td>"

    body = "".join(
        ('<tr class="interp">' if i else "<tr>") + "".join(map(cell, r)) + "</tr>"
        for r, i in zip(table.rows, table.interpreted, strict=True)
    )
    if not any(table.headers):
        return f'<table class="facts"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(table: Table) -> str:
    def cell(c: object) -> str:
        text = (f"**{c.text}**" if c.best else c.text) if isinstance(c, Cell) else axis_value(c)
        # GitHub would read '<...>' from the data as HTML and hide it.
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, table.headers)) + " |", "|" + "---|" * len(table.headers)]
    return "\n".join([*lines, *("| " + " | ".join(map(cell, r)) + " |" for r in table.rows)])


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, numbers to three significant digits (for benchmark scripts)."""
    table = Table(headers=[str(c) for c in frame.columns])
    for row in frame.itertuples(index=False):
        table.add(
            [
                Cell(fmt(v)) if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) else v
                for v in row
            ]
        )
    return _md_table(table)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 auto;
 max-width:1280px;padding:1rem 1.5rem 3rem}
h1{font-size:1.6rem;margin-bottom:.3rem}
h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav a{margin-right:1rem}p{max-width:60rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:13px}
th,td{border:1px solid #dcdcdc;padding:.2rem .55rem;text-align:left;vertical-align:top}
thead th{background:#f3f4f6}table.facts td:first-child{font-weight:600;background:#f8f8f8}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td small{display:block;color:#777;font-size:11px}td.best{font-weight:700;background:#e8f5e9}
tr.interp td{color:#8a8a8a;font-style:italic}
figure{margin:.5rem 0}svg{max-width:100%;height:auto}figcaption{color:#555;font-size:13px}
details pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:.5rem;max-width:60rem}
"""


def _render_html(title: str, blocks: list[Block]) -> str:
    parts, nav = [], []
    for block in (b for b in blocks if b.html):
        text = html.escape(str(block.content))
        if block.kind == "h2":
            anchor = "-".join("".join(c if c.isalnum() else " " for c in str(block.content).lower()).split())
            nav.append(f'<a href="#{anchor}">{text}</a>')
            parts.append(f'<h2 id="{anchor}">{text}</h2>')
        elif block.kind in ("h3", "p"):
            parts.append(f"<{block.kind}>{text}</{block.kind}>")
        else:
            parts.append(_html_table(block.content) if block.kind == "table" else str(block.content))
    head = (
        f'<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>"
    )
    body = f"<h1>{html.escape(title)}</h1>\n<nav>{''.join(nav)}</nav>\n" + "\n".join(parts)
    return f'<!doctype html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n'


def _render_markdown(title: str, blocks: list[Block]) -> str:
    prefix = {"h2": "## ", "h3": "### ", "p": ""}
    parts = [f"# {title}"]
    for block in (b for b in blocks if b.markdown and b.kind != "raw"):
        is_table = block.kind == "table"
        parts.append(_md_table(block.content) if is_table else prefix[block.kind] + str(block.content))
    return "\n\n".join(parts) + "\n"


def build_report(
    results: str | Path | pd.DataFrame, out_dir: str | Path, *, title: str | None = None
) -> ReportPaths:
    """Write `out_dir/index.html` (self-contained, opens offline) and `out_dir/summary.md`.

    `results` is a sweep's dataset directory (what `read_results` takes) or its rows as a DataFrame.
    Several runs are reported together under SELECTION_RULE. Raises ValueError when there is no row.
    """
    df = load_results(results)
    kept = latest_per_trial(df)
    title = title or f"attnsweep report: {_distinct(df['sweep'])}"
    blocks = [Block("h2", "Overview"), *_overview(df, kept)]
    for phase in (p for p in _phases(kept) if p not in TRAINED_PHASES):  # no latency: see Quality
        blocks += _phase(phase, kept[kept["phase"].eq(phase)])
    blocks += quality_blocks(kept) + kv_cache_blocks(kept) + _accuracy(kept) + _failures(df, kept)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(html=out / "index.html", markdown=out / "summary.md")
    paths.html.write_text(_render_html(title, blocks), encoding="utf-8")
    paths.markdown.write_text(_render_markdown(title, blocks), encoding="utf-8")
    return paths
