"""The report baseline (analysis.baseline): `best` as the default, and a fixed baseline that names what
the dataset lacks refused before anything is written."""

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.baseline import DEFAULT_BASELINE, Baseline, BaselineError
from analysis.report import build_report
from tests.analysis.conftest import heads_rows, vendor_rows


def test_best_is_the_default():
    assert Baseline.parse(DEFAULT_BASELINE) == Baseline("mha", "best")
    assert Baseline.parse(DEFAULT_BASELINE).is_best


@pytest.mark.parametrize(
    "text, label, memory_backend",
    [
        pytest.param("best", "best", "torch-sdpa", id="best"),
        pytest.param("gqa/best", "gqa/best", "torch-sdpa", id="best-of-gqa"),
        pytest.param("mha/sdpa-cudnn", "mha/sdpa-cudnn", "sdpa-cudnn", id="fixed"),
    ],
)
def test_label_and_memory_backend(text, label, memory_backend):
    baseline = Baseline.parse(text)
    assert (baseline.label, baseline.memory_backend) == (label, memory_backend)


@pytest.mark.parametrize(
    "baseline, rows, message",
    [
        pytest.param(
            "mha/sdpa-cudnn",
            heads_rows,
            "baseline mha/sdpa-cudnn: no row has backend sdpa-cudnn (the dataset has torch-ref, torch-sdpa, "
            "triton)",
            id="backend-without-rows",
        ),
        pytest.param(
            "moba/torch-sdpa",
            vendor_rows,
            "baseline moba/torch-sdpa: no row has variant moba (the dataset has gqa, mha)",
            id="variant-without-rows",
        ),
        pytest.param(
            "mha/sdpa-flash",
            lambda: [r for r in vendor_rows() if (r["variant"], r["backend"]) != ("mha", "sdpa-flash")],
            "baseline mha/sdpa-flash: no row of mha on sdpa-flash",
            id="pair-without-rows",
        ),
    ],
)
def test_a_baseline_without_rows_is_refused_before_writing(tmp_path, baseline, rows, message):
    out = tmp_path / "report"
    with pytest.raises(BaselineError) as raised:
        build_report(pd.DataFrame(rows()), out, baseline=baseline)
    assert str(raised.value) == message
    assert not out.exists()


@pytest.mark.parametrize(
    "baseline, said",
    [
        pytest.param(
            "best",
            "flex) has a measured row in this phase: no baseline, no speedups.",
            id="best-without-a-measured-pytorch-row",
        ),
        pytest.param(
            "mha/sdpa-cudnn",
            "mha on sdpa-cudnn has no measured row in this phase: no speedups.",
            id="fixed-with-failed-rows-only",
        ),
    ],
)
def test_a_baseline_without_measured_rows_is_said_per_phase(tmp_path, baseline, said):
    """sdpa-cudnn's rows failed (unsupported, error); triton's are the only measured ones."""
    rows = [r for r in vendor_rows() if r["backend"] == "triton" or r["status"] != "ok"]
    markdown = build_report(pd.DataFrame(rows), tmp_path, baseline=baseline).markdown.read_text()
    assert markdown.count(said) == 2  # prefill and decode
