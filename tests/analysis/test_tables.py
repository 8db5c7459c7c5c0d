"""analysis.tables: Triton against SDPA per phase (causal and non-causal prefill apart), the status grid."""

import pandas as pd
import pytest

from analysis.tables import status_grid, triton_vs_sdpa


def _row(backend, phase, causal, seq_len, latency_ms, status="ok", minute=0, **extra):
    return {
        "trial_id": f"{backend}-{phase}-{causal}-{seq_len}",
        "variant": "gqa",
        "backend": backend,
        "phase": phase,
        "causal": causal,
        "seq_len": seq_len,
        "n_heads": 32,
        "n_kv_heads": 8,
        "params": "{}",
        "status": status,
        "latency_ms": latency_ms,
        "tflops": 100.0 / latency_ms if latency_ms else None,
        "gbps": 1000.0 / latency_ms if latency_ms else None,
        "pct_peak": 10.0,
        "timestamp": pd.Timestamp("2026-12-07") + pd.Timedelta(minutes=minute),
        **extra,
    }


@pytest.fixture
def rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _row("triton", "prefill", True, 1000, 2.0),
            _row("torch-sdpa", "prefill", True, 1000, 4.0),
            _row("triton", "prefill", False, 1000, 3.0),
            _row("torch-sdpa", "prefill", False, 1000, 3.0),
            _row("triton", "decode", True, 1000, 0.5),
            _row("torch-sdpa", "decode", True, 1000, 0.25),
            _row("torch-sdpa", "decode", True, 1000, 1.0, minute=-5),  # older row of the same point
            _row("triton", "decode", True, 3000, None, status="error"),
            _row("torch-ref", "prefill", True, 1000, 9.0),
        ]
    )


def test_triton_vs_sdpa_keeps_causal_and_non_causal_prefill_apart(rows):
    table = triton_vs_sdpa(rows).set_index(["phase", "seq_len"])
    assert list(table.index.get_level_values("phase")) == ["prefill causal", "prefill non-causal", "decode"]
    assert table.loc[("prefill causal", 1000), "triton/sdpa time"] == pytest.approx(0.5)
    assert table.loc[("prefill non-causal", 1000), "triton/sdpa time"] == pytest.approx(1.0)
    # Decode reports GB/s, prefill TFLOP/s; the latest row of a point measured twice wins.
    assert table.loc[("decode", 1000), "sdpa rate"] == pytest.approx(4000.0)
    assert table.loc[("decode", 1000), "triton/sdpa time"] == pytest.approx(2.0)
    assert table.loc[("prefill causal", 1000), "triton rate"] == pytest.approx(50.0)
    assert "params" not in table.columns  # no variant parameters in this sweep


def test_triton_vs_sdpa_without_rows_of_either_backend_is_empty(rows):
    assert triton_vs_sdpa(rows[rows["backend"] == "torch-ref"]).empty


def test_status_grid_marks_failures_and_unsupported(rows):
    extra = pd.DataFrame([_row("triton", "train", True, 1000, None, status="unsupported")])
    grid = status_grid(pd.concat([rows, extra])).set_index("variant")
    assert grid.loc["gqa", "triton decode"] in ("ok 0.500 / ERROR", "ERROR / ok 0.500")
    assert grid.loc["gqa", "triton train"] == "—"
    assert grid.loc["gqa", "torch-sdpa prefill"] in ("ok 4.00 / ok 3.00", "ok 3.00 / ok 4.00")


def test_triton_vs_sdpa_names_the_fastest_pytorch_kernel_where_pinned_ones_ran(rows):
    pinned = pd.DataFrame(
        [
            _row("sdpa-cudnn", "prefill", True, 1000, 1.0),
            _row("sdpa-flash", "prefill", True, 1000, 3.0),
            _row("flex", "prefill", False, 1000, 2.0),
            _row("sdpa-cudnn", "prefill", False, 1000, None, status="unsupported"),
        ]
    )
    table = triton_vs_sdpa(pd.concat([rows, pinned])).set_index(["phase", "seq_len"])
    assert table.loc[("prefill causal", 1000), "best"] == "sdpa-cudnn"
    assert table.loc[("prefill causal", 1000), "triton/best time"] == pytest.approx(2.0)
    assert table.loc[("prefill non-causal", 1000), "best"] == "flex"
    assert table.loc[("decode", 1000), "best"] == "torch-sdpa"  # the only PyTorch kernel there
    assert table.loc[("prefill causal", 1000), "triton/sdpa time"] == pytest.approx(0.5)  # unchanged


def test_triton_vs_sdpa_without_pinned_kernels_has_no_best_column(rows):
    assert "best" not in triton_vs_sdpa(rows).columns
