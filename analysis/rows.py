"""Which rows a report shows: loading, one row per trial, the rows that count for speed, capped lists."""

from pathlib import Path

import pandas as pd

from analysis.plots import axis_value
from analysis.schema import COLUMNS, CONFIG_COLUMNS, NUMERIC_COLUMNS, TRAINED_PHASES
from analysis.store import read_results

SELECTION_RULE = (
    "Selection rule: each trial (trial_id) appears once, as its latest ok row (by timestamp, then run_id "
    "and attempt); a trial without any ok row appears as its latest row. The status table counts every "
    "row; all other tables show the kept rows only."
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
    for column in NUMERIC_COLUMNS:  # a column that is all None (an older or sparse frame) is numeric too
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    df["interpreted"] = df["interpreted"].eq(True)
    df["status"] = df["status"].fillna("unknown")
    df["phase"] = df["phase"].fillna("unknown")
    return df.reset_index(drop=True)


def latest_per_trial(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (SELECTION_RULE): its latest ok row, else its latest row."""
    key = df["trial_id"].astype(object)
    missing = key.isna()
    if missing.any():  # rows from before trial ids: their configuration is the key
        config = df.loc[missing, list(CONFIG_COLUMNS)].astype(object)
        key[missing] = [repr(tuple(r)) for r in config.itertuples(index=False)]
    ordered = df.assign(_key=key, _ok=df["status"].eq("ok")).sort_values(
        ["_ok", "timestamp", "run_id", "attempt"], na_position="first", kind="stable"
    )
    kept = ordered.drop_duplicates("_key", keep="last")
    return kept.drop(columns=["_key", "_ok"]).sort_index()


def measured(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that count for speed: ok, a positive latency, not Triton's CPU interpreter."""
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce")
    return rows[rows["status"].eq("ok") & ~rows["interpreted"] & (latency > 0)]


def fair_head(frame: pd.DataFrame, by: list[str], limit: int) -> pd.DataFrame:
    """At most `limit` rows, in frame order, taking the first rows of every group of `by` in turn,
    so that a capped table still shows every group (as far as the limit allows)."""
    if len(frame) <= limit:
        return frame
    rank = frame.groupby(by, dropna=False, sort=False).cumcount()
    order = rank.sort_values(kind="stable").index[:limit]
    return frame.loc[frame.index.isin(order)]


def shown_note(shown: int, total: int, what: str, how: str) -> str:
    """The sentence that says a table is capped; empty when it is not."""
    return "" if shown >= total else f"Showing {shown} of {total} {what} ({how}); the dataset holds all."


def tally_points(values: pd.Series, order: list[str]) -> str:
    """'sdpa-flash at 10 points, flex at 2': how often each value occurs, the most frequent first (a tie:
    in `order`, then by name)."""
    counts = values.value_counts()
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(counts.items(), key=lambda item: (-item[1], rank.get(item[0], len(rank)), str(item[0])))
    parts = [f"{name} at {n}" for name, n in ordered]
    if parts:
        parts[0] += " point" if ordered[0][1] == 1 else " points"
    return ", ".join(parts)


def text(value: object) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def error_summary(error: object, limit: int = 160) -> str:
    """The line that names the error: the first one, or a Python traceback's last (the exception)."""
    lines = [s.strip() for s in text(error).strip().splitlines() if s.strip()]
    if not lines:
        return "(no message)"
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def distinct(series: pd.Series, limit: int = 6) -> str:
    values = [axis_value(v) for v in series.dropna().unique() if str(v) != ""]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more if values else "—"


def point_label(row: pd.Series) -> str:
    causal = " causal" if row["causal"] is True or row["causal"] == 1 else ""
    heads = f"H={axis_value(row['n_heads'])}/{axis_value(row['n_kv_heads'])}"
    seed = f" seed={axis_value(row['seed'])}" if row["phase"] in TRAINED_PHASES else ""
    return (
        f"B={axis_value(row['batch'])} N={axis_value(row['seq_len'])} {heads} "
        f"d={axis_value(row['head_dim'])} {axis_value(row['dtype'])}{causal}{seed}"
    )
