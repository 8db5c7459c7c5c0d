"""`attnsweep report RESULTS [--out DIR] [--baseline B]` (B: best or VARIANT/BACKEND) on a dataset written
by the store."""

import pytest

from analysis.store import ResultStore
from orchestrator.cli import main
from tests.analysis.conftest import fixture_rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The analysis tests' small two-run dataset (a report of it builds in about 2 s)."""
    root = tmp_path_factory.mktemp("results")
    for index, rows in enumerate(fixture_rows()):
        store = ResultStore(root, "fixture", f"run-{index}")
        store.append(rows)
        store.finalize()
    return root / "fixture"


@pytest.mark.parametrize(
    "args, heading",
    [
        pytest.param([], "against the fastest PyTorch kernel of mha", id="default-baseline-best"),
        pytest.param(["--baseline", "mha/torch-sdpa"], "against mha on torch-sdpa", id="fixed-baseline"),
        pytest.param(["--baseline", "mqa/torch-ref"], "against mqa on torch-ref", id="chosen-baseline"),
    ],
)
def test_report_writes_both_files_against_the_baseline(dataset, tmp_path, capsys, args, heading):
    assert main(["report", str(dataset), "--out", str(tmp_path), *args]) == 0
    html_path, markdown_path = tmp_path / "index.html", tmp_path / "summary.md"
    assert capsys.readouterr().out == f"report: {html_path}\nsummary: {markdown_path}\n"
    assert f"### prefill: at a glance, {heading}" in (tmp_path / "summary.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("baseline", ["mha", "mha/", "mha/torch-sdpa/x"])
def test_malformed_baseline_exits_2_before_reading(dataset, tmp_path, capsys, baseline):
    assert main(["report", str(dataset), "--out", str(tmp_path / "out"), "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--baseline={baseline}: baseline must be VARIANT/BACKEND" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "baseline, says",
    [
        pytest.param("mha/sdpa-cudnn", "no row has backend sdpa-cudnn", id="backend-without-rows"),
        pytest.param("moba/triton", "no row has variant moba", id="variant-without-rows"),
    ],
)
def test_a_baseline_without_rows_exits_2_and_writes_nothing(dataset, tmp_path, capsys, baseline, says):
    out = tmp_path / "out"
    assert main(["report", str(dataset), "--out", str(out), "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--baseline={baseline}: baseline {baseline}: {says}" in err
    assert not out.exists()
