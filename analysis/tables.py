"""Plain tables of result rows for the benchmark scripts (benchmarks/attention_table.py, gpu_check.py)."""

import pandas as pd

from analysis.baseline import VENDOR_BACKENDS
from analysis.blocks import fmt

# Prefill split by its mask: causal and non-causal points are different questions.
PHASE_ORDER = {"prefill causal": 0, "prefill non-causal": 1, "decode": 2, "train": 3}


def _phase_label(rows: pd.DataFrame) -> pd.Series:
    causal = rows["causal"].map({True: "prefill causal", False: "prefill non-causal"})
    return rows["phase"].where(rows["phase"].ne("prefill"), causal)


def triton_vs_sdpa(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (phase, variant, params, heads, seq_len) of the ok rows: Triton's and SDPA's median
    latency, rate (TFLOP/s in prefill and train, GB/s in decode) and % of the measured peak, and
    Triton's time over SDPA's (< 1: Triton is faster); where pinned SDPA kernels or flex ran too, the
    fastest PyTorch kernel of the point (`best`, its ms) and Triton's time over it. A point measured
    twice keeps its latest row."""
    ok = rows[rows["status"].eq("ok") & rows["backend"].isin(["triton", *VENDOR_BACKENDS])].copy()
    if not ok["backend"].isin(["triton", "torch-sdpa"]).any():
        return pd.DataFrame()
    ok["phase"] = _phase_label(ok)
    ok["rate"] = ok["tflops"].where(ok["phase"].ne("decode"), ok["gbps"])
    ok["heads"] = ok["n_heads"].astype(str) + "/" + ok["n_kv_heads"].astype(str)
    index = ["phase", "variant", "params", "heads", "seq_len"]
    ok = ok.sort_values("timestamp").drop_duplicates(index + ["backend"], keep="last")
    wide = ok.pivot_table(
        index=index, columns="backend", values=["latency_ms", "rate", "pct_peak"], aggfunc="first"
    )
    table = pd.DataFrame(index=wide.index)
    for backend, short in (("triton", "triton"), ("torch-sdpa", "sdpa")):
        for metric, label in (("latency_ms", "ms"), ("rate", "rate"), ("pct_peak", "% peak")):
            if (metric, backend) in wide.columns:
                table[f"{short} {label}"] = wide[(metric, backend)]
    if {"triton ms", "sdpa ms"} <= set(table.columns):
        table["triton/sdpa time"] = table["triton ms"] / table["sdpa ms"]
    vendor = wide["latency_ms"][[b for b in VENDOR_BACKENDS if b in wide["latency_ms"].columns]]
    if vendor.shape[1] > 1:  # more than the automatic choice: name the fastest at each point
        table["best"] = vendor.idxmin(axis=1, skipna=True).where(vendor.notna().any(axis=1))
        table["best ms"] = vendor.min(axis=1)
        if "triton ms" in table.columns:
            table["triton/best time"] = table["triton ms"] / table["best ms"]
    table = table.reset_index()
    table["_order"] = table["phase"].map(PHASE_ORDER).fillna(len(PHASE_ORDER))
    table = table.sort_values(["_order", "variant", "params", "seq_len"]).drop(columns="_order")
    if table["params"].fillna("").isin(["", "{}"]).all():
        table = table.drop(columns="params")
    return table


def status_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """variant × "backend phase": 'ok <median ms>', '—' for unsupported, else the status in capitals
    (each trial's latest row)."""
    latest = rows.sort_values("timestamp").drop_duplicates("trial_id", keep="last")

    def cell(row) -> str:
        if row.status == "ok":
            return f"ok {fmt(row.latency_ms)}" if pd.notna(row.latency_ms) else "ok"
        return "—" if row.status == "unsupported" else row.status.upper()

    latest = latest.assign(
        cell=[cell(r) for r in latest.itertuples()], column=latest["backend"] + " " + latest["phase"]
    )
    grid = latest.pivot_table(index="variant", columns="column", values="cell", aggfunc=" / ".join)
    return grid.fillna("").reset_index()
