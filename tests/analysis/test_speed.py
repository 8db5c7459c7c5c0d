"""Speedups against a baseline and the 'at a glance' table (analysis.speed), on planted latencies."""

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.baseline import Baseline
from analysis.blocks import fmt
from analysis.report import build_report
from analysis.rows import load_results
from analysis.speed import glance, glance_blocks, speedups
from tests.analysis.conftest import heads_rows, make_row
from tests.analysis.test_report import Page, md_tables

T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)


def planted(latencies: dict[tuple, float], **shape) -> pd.DataFrame:
    """Rows of (variant, backend, seq_len) -> latency, prefill, the conftest's toy rates and peaks."""
    rows = [
        make_row(
            "run-s",
            T0 + timedelta(seconds=i),
            variant=v,
            backend=b,
            phase="prefill",
            seq_len=n,
            latency_ms=ms,
            **shape,
        )
        for i, ((v, b, n), ms) in enumerate(latencies.items())
    ]
    return load_results(pd.DataFrame(rows))


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("mha/torch-sdpa", Baseline("mha", "torch-sdpa"), id="default"),
        pytest.param(" gqa / triton ", Baseline("gqa", "triton"), id="spaces-trimmed"),
        pytest.param(Baseline("mqa", "torch-ref"), Baseline("mqa", "torch-ref"), id="already-parsed"),
    ],
)
def test_baseline_parse(text, expected):
    assert Baseline.parse(text) == expected


@pytest.mark.parametrize("text", ["mha", "/triton", "mha/", "mha/triton/extra", ""], ids=repr)
def test_baseline_parse_rejects_malformed(text):
    with pytest.raises(ValueError, match="VARIANT/BACKEND"):
        Baseline.parse(text)


def test_speedup_is_baseline_latency_over_latency_at_the_same_point():
    rows = planted(
        {
            ("mha", "torch-sdpa", 100): 2.0,
            ("mha", "torch-sdpa", 1000): 30.0,
            ("gqa", "triton", 100): 0.5,  # 4×
            ("gqa", "triton", 1000): 60.0,  # 0.5×
            ("gqa", "triton", 384): 1.0,  # no baseline at 384
        },
        n_heads=6,
        head_dim=48,
    )
    got = speedups(rows, Baseline("mha", "torch-sdpa")).set_index(["variant", "seq_len"])["speedup"]
    assert got["gqa", 100] == pytest.approx(4.0)
    assert got["gqa", 1000] == pytest.approx(0.5)
    assert math.isnan(got["gqa", 384])
    assert got["mha", 100] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "change, matched",
    [
        pytest.param(dict(device="NVIDIA A100"), False, id="other-device"),
        pytest.param(dict(batch=5), False, id="other-batch"),
        pytest.param(dict(n_kv_heads=3), True, id="kv-heads-are-the-variants-own"),
        pytest.param(dict(params='{"top_k":2}'), True, id="params-are-the-variants-own"),
        pytest.param(dict(interpreted=True), False, id="interpreted-never-compared"),
    ],
)
def test_what_a_point_must_share_with_the_baseline(change, matched):
    rows = planted({("mha", "torch-sdpa", 100): 2.0, ("gqa", "triton", 100): 1.0}, n_heads=6)
    rows.loc[rows["variant"].eq("gqa"), list(change)] = list(change.values())
    result = speedups(rows, Baseline("mha", "torch-sdpa"))
    gqa = result[result["variant"].eq("gqa")]
    if change.get("interpreted"):
        assert gqa.empty  # not a measured row at all
    else:
        assert gqa["speedup"].notna().item() is matched


def test_a_baseline_swept_over_kv_heads_matches_its_own_kv_heads():
    rows = planted({("gqa", "triton", 100): 1.0, ("mha", "triton", 100): 3.0}, n_heads=12)
    other_kv = rows[rows["variant"].eq("gqa")].assign(n_kv_heads=4, latency_ms=2.0, trial_id="other")
    rows = pd.concat([rows, other_kv], ignore_index=True)
    result = speedups(rows, Baseline("gqa", "triton")).set_index(["variant", "n_kv_heads"])["speedup"]
    assert result["gqa", 2] == pytest.approx(1.0) and result["gqa", 4] == pytest.approx(1.0)
    assert math.isnan(result["mha", 12])  # mha's 12 KV heads: no gqa row with 12


def test_glance_pools_points_by_geometric_mean():
    rows = planted(
        {
            ("mha", "torch-sdpa", 100): 2.0,
            ("mha", "torch-sdpa", 1000): 8.0,
            ("mqa", "torch-sdpa", 100): 1.0,  # 2×
            ("mqa", "torch-sdpa", 1000): 1.0,  # 8×
        }
    )
    table = glance(rows, Baseline("mha", "torch-sdpa")).set_index("variant")
    assert table.loc["mqa", "speedup"] == pytest.approx(4.0)
    assert (table.loc["mqa", "speedup_min"], table.loc["mqa", "speedup_max"]) == pytest.approx((2.0, 8.0))
    assert table.loc["mqa", "tflops"] == pytest.approx(rows[rows["variant"].eq("mqa")]["tflops"].max())
    assert table.loc["mqa", "peak_tflops"] == 700.0
    assert list(table.index) == ["mqa", "mha"]  # fastest first


def test_glance_table_marks_the_baseline_and_states_shares_of_peak():
    rows = planted({("mha", "torch-sdpa", 1000): 0.02, ("gqa", "torch-sdpa", 1000): 0.01})
    table = next(
        b.content for b in glance_blocks("prefill", rows, Baseline("mha", "torch-sdpa")) if b.kind == "table"
    )
    cells = {r[0]: [getattr(c, "text", c) for c in r] for r in table.rows}
    assert cells["mha"][3] == "baseline" and cells["gqa"][3] == "2.00×"
    tflops = rows.set_index("variant").loc["gqa", "tflops"]
    assert cells["gqa"][6] == f"{fmt(100 * tflops / 700)}%"


def test_missing_baseline_is_said_not_guessed():
    rows = planted({("gqa", "triton", 100): 1.0})
    text = " ".join(str(b.content) for b in glance_blocks("prefill", rows, Baseline("mha", "torch-sdpa")))
    assert "mha on torch-sdpa has no measured row in this phase: no speedups." in text


@pytest.mark.parametrize(
    "baseline, measured_in",
    [
        pytest.param("mha/torch-sdpa", 3, id="mha-torch-sdpa"),
        pytest.param("gqa/triton", 2, id="gqa-triton-decode-interpreted"),
        pytest.param("mqa/torch-ref", 3, id="mqa-torch-ref"),
    ],
)
def test_build_report_uses_the_chosen_baseline(tmp_path, baseline, measured_in):
    paths = build_report(pd.DataFrame(heads_rows()), tmp_path, baseline=baseline)
    markdown = paths.markdown.read_text(encoding="utf-8")
    variant, backend = baseline.split("/")
    assert f"### prefill: at a glance, against {variant} on {backend}" in markdown
    glance_tables = [t for t in md_tables(markdown) if t[0].startswith("| variant | backend | points |")]
    assert len(glance_tables) == 3  # prefill, decode, train
    with_baseline = [
        any(line.startswith(f"| {variant} | {backend} |") and "| baseline |" in line for line in table)
        for table in glance_tables
    ]
    assert sum(with_baseline) == measured_in
    missing = f"{variant} on {backend} has no measured row in this phase: no speedups."
    assert markdown.count(missing) == 3 - measured_in
    assert Page(paths.html.read_text(encoding="utf-8")).errors == []


def test_build_report_rejects_a_malformed_baseline(tmp_path):
    with pytest.raises(ValueError, match="VARIANT/BACKEND"):
        build_report(pd.DataFrame(heads_rows()), tmp_path, baseline="mha")
    assert not (tmp_path / "index.html").exists()
