"""The roofline section (analysis.roofline): intensity and achieved rate per row, the measured ceilings."""

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.roofline import MAX_POINTS, ceilings, roofline_blocks, roofline_rows
from analysis.rows import load_results
from tests.analysis.conftest import heads_rows


@pytest.fixture(scope="module")
def kept():
    return load_results(pd.DataFrame(heads_rows()))


def test_intensity_and_achieved_rate_come_from_the_cost_model_and_latency(kept):
    rows = roofline_rows(kept)
    assert not rows.empty
    assert (rows["intensity"] == rows["flops"] / rows["bytes_moved"]).all()
    assert rows["achieved"].to_numpy() == pytest.approx((rows["flops"] / rows["latency_ms"] / 1e9).to_numpy())


def test_only_measured_rows_are_drawn(kept):
    rows = roofline_rows(kept)
    assert not rows["interpreted"].any() and rows["status"].eq("ok").all()
    measured = kept["status"].eq("ok") & ~kept["interpreted"]
    assert len(rows) == int(measured.sum())


@pytest.mark.parametrize(
    "peaks, expected",
    [
        pytest.param([700.0, 700.0, 700.0], 700.0, id="one-value"),
        pytest.param([600.0, 700.0, 900.0], 700.0, id="median-of-runs"),
    ],
)
def test_ceilings_are_the_median_measured_peaks(kept, peaks, expected):
    rows = roofline_rows(kept).head(3).assign(peak_tflops=peaks, peak_gbps=[3000.0, 2900.0, 3100.0])
    roof = ceilings(rows).iloc[0]
    assert roof["peak_tflops"] == expected and roof["peak_gbps"] == 3000.0
    assert roof["ridge"] == pytest.approx(expected * 1e3 / 3000.0)  # FLOP/byte where the roofs meet


def test_a_panel_per_device_and_dtype(kept):
    other = kept.assign(dtype="float16", peak_tflops=650.0)
    roofs = ceilings(roofline_rows(pd.concat([kept, other], ignore_index=True)))
    assert sorted(roofs["dtype"]) == ["bfloat16", "float16"]
    assert set(roofs["peak_tflops"]) == {700.0, 650.0}


def test_section_has_labelled_axes_and_the_ceilings(kept):
    blocks = roofline_blocks(kept)
    figure = next(b.content for b in blocks if b.kind == "raw")
    for text in (
        "arithmetic intensity (FLOP/byte, log scale)",
        "achieved TFLOP/s (log scale)",
        "700 TFLOP/s",
        "3000 GB/s",
    ):
        assert text in figure
    table = next(b.content for b in blocks if b.kind == "table")
    assert table.headers[:4] == ["device", "dtype", "peak TFLOP/s", "peak GB/s"]
    assert [c.text for c in table.rows[0][2:4]] == ["700", "3000"]


def test_large_panels_are_sampled_and_say_so(kept):
    big = pd.concat([kept] * (MAX_POINTS // len(kept) + 2), ignore_index=True)
    text = " ".join(str(b.content) for b in roofline_blocks(big))
    assert f"draws a random sample of {MAX_POINTS}" in text


def test_no_peaks_no_roofline(kept):
    blocks = roofline_blocks(load_results(kept.assign(peak_tflops=None, peak_gbps=None)))
    assert [b.kind for b in blocks] == ["h2", "p"]
