"""The scale benchmark's dataset (benchmarks/report_scale.py) and what a large report keeps readable:
capped tables that say so, every variant still shown, a short summary.md. Timings are the benchmark's
business, never asserted here."""

import importlib.util
import re
from pathlib import Path

import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.failures import MAX_ROWS as FAILURE_ROWS
from analysis.latency import DETAIL_ROWS, PIVOT_ROWS
from analysis.report import build_report
from analysis.schema import COLUMNS, STATUSES
from analysis.store import read_results
from tests.analysis.test_report import Page, md_tables

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report_scale.py"
N_ROWS = 3000


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("report_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


@pytest.fixture(scope="module")
def dataset(bench, tmp_path_factory):
    return bench.synthesise(tmp_path_factory.mktemp("scale") / "results", N_ROWS)


@pytest.fixture(scope="module")
def report(dataset, tmp_path_factory):
    paths = build_report(dataset, tmp_path_factory.mktemp("scale-report"))
    return paths.html.read_text(encoding="utf-8"), paths.markdown.read_text(encoding="utf-8")


def test_synthetic_dataset_is_schema_valid_and_varied(dataset, bench):
    df = read_results(dataset)
    assert len(df) == N_ROWS and list(df.columns) == list(COLUMNS)
    assert set(df["status"]) == set(STATUSES)
    assert df["interpreted"].any() and not df.loc[df["interpreted"], "backend"].ne("triton").any()
    assert set(df["phase"]) == {"prefill", "decode", "train", "quality"}
    assert df["run_id"].nunique() == 2 and df["trial_id"].duplicated().any()  # the second run repeats trials
    assert df["seq_len"].isin([384, 1000, 3000]).any()  # not only powers of two
    ok = df[df["status"].eq("ok") & df["phase"].ne("quality")]
    assert ok[["latency_ms", "tflops", "gbps", "pct_peak", "peak_tflops", "rel_err"]].notna().all().all()


def test_large_report_is_well_formed_and_names_every_variant(report, bench):
    html_text, _ = report
    page = Page(html_text)
    assert page.errors == []
    for variant, *_ in bench.LINES:
        assert f"<td>{variant}</td>" in html_text, variant


def test_large_tables_are_capped_and_say_so(report):
    html_text, _ = report
    assert f"Showing {PIVOT_ROWS} of" in html_text and f"Showing {DETAIL_ROWS} of" in html_text
    bodies = [t.count("<tr") - 1 for t in re.findall(r"<table.*?</table>", html_text, re.S)]
    assert max(bodies) <= max(DETAIL_ROWS, 400)
    failures = html_text.split('id="failures"')[1]
    assert failures.count("<details>") <= FAILURE_ROWS


def test_summary_stays_short(report):
    _, markdown = report
    assert len(markdown) < 20_000
    assert all(len(table) <= 2 + 20 for table in md_tables(markdown))  # header, rule, at most 20 rows
    assert "<svg" not in markdown
