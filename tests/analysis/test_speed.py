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
        pytest.param("best", Baseline("mha", "best"), id="best-of-mha"),
        pytest.param(" gqa/best", Baseline("gqa", "best"), id="best-of-another-variant"),
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


BEST = Baseline.parse("best")


def rows_of(entries: list[tuple], **shape) -> pd.DataFrame:
    """(variant, backend, seq_len, latency_ms[, status]) -> prefill rows; a row that is not ok keeps
    its planted latency, so that only its status can leave it out."""
    rows = planted({(v, b, n): ms for v, b, n, ms, *_ in entries}, **shape)
    return rows.assign(status=[entry[4] if len(entry) > 4 else "ok" for entry in entries])


@pytest.mark.parametrize(
    "entries, expected",
    [
        pytest.param(
            [("mha", "torch-sdpa", 100, 2.0), ("mha", "sdpa-flash", 100, 1.0), ("mha", "flex", 100, 1.5)],
            ("sdpa-flash", 1.0),
            id="fastest-vendor-row",
        ),
        pytest.param(
            [("mha", "sdpa-flash", 100, 1.0), ("mha", "torch-sdpa", 100, 1.0)],
            ("torch-sdpa", 1.0),
            id="tie-first-in-VENDOR_BACKENDS",
        ),
        pytest.param(
            [("mha", "torch-sdpa", 100, 2.0), ("mha", "sdpa-cudnn", 100, 0.5, "unsupported")],
            ("torch-sdpa", 2.0),
            id="faster-unsupported-row-ignored",
        ),
        pytest.param(
            [("mha", "torch-sdpa", 100, 2.0), ("mha", "sdpa-flash", 100, 0.5, "error")],
            ("torch-sdpa", 2.0),
            id="faster-error-row-ignored",
        ),
        pytest.param(
            [("mha", "sdpa-math", 100, 3.0), ("mha", "triton", 100, 0.5), ("mha", "torch-ref", 100, 0.4)],
            ("sdpa-math", 3.0),
            id="not-pytorchs-never-the-baseline",
        ),
        pytest.param(
            [("mha", "triton", 100, 0.5), ("mha", "sdpa-flash", 1000, 9.0)], (None, None), id="missing-point"
        ),
    ],
)
def test_best_is_the_fastest_ok_pytorch_row_at_each_point(entries, expected):
    result = speedups(rows_of([*entries, ("gqa", "triton", 100, 0.25)]), BEST)
    gqa = result[result["variant"].eq("gqa")].iloc[0]
    backend, ms = expected
    if backend is None:
        assert pd.isna(gqa["baseline_backend"]) and math.isnan(gqa["speedup"])
    else:
        assert gqa["baseline_backend"] == backend
        assert (gqa["baseline_ms"], gqa["speedup"]) == pytest.approx((ms, ms / 0.25))


@pytest.mark.parametrize(
    "entries, expected",
    [
        pytest.param(
            [("mha", "sdpa-flash", 100, 2.0), ("mqa", "flex", 100, 1.0)],
            {"gqa": 1.0, "mqa": 0.5},  # mha's sdpa-flash for both: 2.0 / (2.0, 4.0)
            id="mha-when-it-has-vendor-rows",
        ),
        pytest.param(
            [("gqa", "sdpa-flash", 100, 1.0), ("mqa", "flex", 100, 3.0), ("mha", "triton", 100, 0.1)],
            {"gqa": 0.5, "mqa": 0.75},  # each its own: 1.0 / 2.0, 3.0 / 4.0
            id="own-variant-without-mha-vendor-rows",
        ),
    ],
)
def test_best_takes_mha_else_each_rows_own_variant(entries, expected):
    rows = rows_of([*entries, ("gqa", "triton", 100, 2.0), ("mqa", "triton", 100, 4.0)])
    result = speedups(rows, BEST)
    triton = result[result["backend"].eq("triton") & result["variant"].ne("mha")]
    assert triton.set_index("variant")["speedup"].to_dict() == pytest.approx(expected)


def test_own_variant_best_matches_its_kv_heads_and_params():
    rows = rows_of([("gqa", "sdpa-flash", 100, 1.0), ("gqa", "triton", 100, 0.5)], n_heads=12)
    other = rows.assign(n_kv_heads=4, params='{"x":1}', latency_ms=[3.0, 1.0], trial_id=["a", "b"])
    result = speedups(pd.concat([rows, other], ignore_index=True), BEST)
    triton = result[result["backend"].eq("triton")].set_index("n_kv_heads")
    assert (triton.loc[2, "speedup"], triton.loc[4, "speedup"]) == pytest.approx((2.0, 3.0))


def test_glance_against_best_names_the_baseline_kernel_at_each_point():
    rows = rows_of(
        [("mha", "sdpa-flash", n, 1.0) for n in (100, 200, 300)]
        + [
            ("mha", "flex", 300, 0.5),
            ("mha", "sdpa-cudnn", 200, 0.1, "unsupported"),
            ("gqa", "triton", 100, 0.5),
        ]
    )
    blocks = glance_blocks("prefill", rows, BEST)
    texts = [str(b.content) for b in blocks if b.kind in ("h3", "p")]
    assert texts[0] == "prefill: at a glance, against the fastest PyTorch kernel of mha"
    assert texts[-1].endswith(
        "among torch-sdpa, sdpa-flash, sdpa-efficient, sdpa-cudnn, sdpa-math, flex: "
        "sdpa-flash at 2 points, flex at 1."
    )
    table = next(b.content for b in blocks if b.kind == "table")
    assert table.headers[3] == "× best"
    cells = {(r[0], r[1]): r[3].text for r in table.rows}
    assert cells["gqa", "triton"] == "2.00×" and cells["mha", "sdpa-flash"] == f"{fmt(0.5 ** (1 / 3))}×"
    assert any(b.kind == "raw" and "speedup over best" in str(b.content) for b in blocks)


def test_glance_of_own_variants_names_each_variants_kernels():
    rows = rows_of([("gqa", "sdpa-flash", 100, 1.0), ("mqa", "flex", 100, 2.0), ("mqa", "triton", 100, 1.0)])
    texts = [str(b.content) for b in glance_blocks("prefill", rows, BEST) if b.kind in ("h3", "p")]
    assert texts[0] == "prefill: at a glance, against the fastest PyTorch kernel of each variant"
    assert "of the row's own variant" in texts[-1]
    assert texts[-1].endswith(": gqa: sdpa-flash at 1 point; mqa: flex at 1 point.")


def test_best_without_a_pytorch_row_says_there_is_no_baseline():
    rows = rows_of([("mha", "triton", 100, 1.0), ("gqa", "torch-sdpa", 100, 0.5, "error")])
    blocks = glance_blocks("prefill", rows, BEST)
    assert "has a measured row in this phase: no baseline, no speedups." in str(blocks[-1].content)
    table = next(b.content for b in blocks if b.kind == "table")
    assert [r[3].text for r in table.rows] == ["—"]
    assert not any(b.kind == "raw" for b in blocks)  # no speedup to draw


def test_a_fixed_baseline_is_unchanged_beside_vendor_rows():
    """mha/torch-sdpa stays mha on torch-sdpa, even where sdpa-flash is faster."""
    rows = rows_of(
        [("mha", "torch-sdpa", 100, 2.0), ("mha", "sdpa-flash", 100, 1.0), ("gqa", "triton", 100, 1.0)]
    )
    blocks = glance_blocks("prefill", rows, Baseline.parse("mha/torch-sdpa"))
    assert blocks[0].content == "prefill: at a glance, against mha on torch-sdpa"
    assert not any("Baseline best" in str(b.content) for b in blocks)
    cells = {(r[0], r[1]): r[3].text for r in next(b.content for b in blocks if b.kind == "table").rows}
    assert cells == {
        ("mha", "torch-sdpa"): "baseline",
        ("mha", "sdpa-flash"): "2.00×",
        ("gqa", "triton"): "2.00×",
    }
