"""build_report on the two-run fixture dataset and on its edge cases."""

import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.blocks import fmt
from analysis.report import build_report
from analysis.rows import error_summary, latest_per_trial, load_results
from tests.analysis.conftest import (
    BACKENDS,
    DEVICE,
    ERROR_TRIAL,
    FASTER_LATENCY,
    FASTER_TRIAL,
    HOST,
    KEPT_TRIAL,
    OOM_TRIAL,
    RUN_1,
    RUN_2,
    TRACEBACK,
    VARIANTS,
)

REPO = Path(__file__).resolve().parents[2]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Parses a page, recording unbalanced tags, tag counts, text and the <tr> classes with their cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: Counter = Counter()
        self.text: list[str] = []
        self.rows: list[tuple[str, list[str]]] = []  # (tr class, td classes)
        self.feed(text)
        self.close()
        self.errors += [f"unclosed <{tag}>" for tag in self.stack]

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append((attrs.get("class") or "", []))
        elif tag == "td" and self.rows:
            self.rows[-1][1].append(attrs.get("class") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def figures(html_text: str) -> list[str]:
    """The text of each inline SVG figure (titles, axis labels, legends), one string per figure."""
    return [
        " | ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
        for svg in re.findall(r"<svg.*?</svg>", html_text, re.S)
    ]


def has_figures(html_text: str, *titles: str) -> bool:
    """Exactly one figure per title, in that order, and no other."""
    found = figures(html_text)
    return len(found) == len(titles) and all(t in f for t, f in zip(titles, found, strict=True))


SPEEDUP = "speedup over the fastest PyTorch kernel of mha"  # the default baseline, best
ROOFLINE = "Roofline: achieved rate against arithmetic intensity"
KV_BARS = "KV cache per token across variants"
HEATMAP = "Relative error against the high-precision reference"


def md_tables(markdown: str) -> list[list[str]]:
    """The Markdown tables as lists of lines; each must keep one column count."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    for table in tables:
        counts = {line.replace("\\|", "").count("|") for line in table}
        assert len(counts) == 1, f"ragged table: {table}"
    return tables


@pytest.fixture(scope="module")
def report(results_dir, tmp_path_factory):
    paths = build_report(results_dir, tmp_path_factory.mktemp("report"))
    return paths, paths.html.read_text(encoding="utf-8"), paths.markdown.read_text(encoding="utf-8")


def test_build_report_writes_both_files(report):
    paths, html_text, markdown = report
    assert paths.html.name == "index.html" and paths.markdown.name == "summary.md"
    assert paths.html.parent == paths.markdown.parent
    assert html_text and markdown


def test_html_is_well_formed_and_self_contained(report):
    _, html_text, _ = report
    assert html_text.startswith("<!doctype html>")
    page = Page(html_text)
    assert page.errors == []
    assert page.tags["title"] == 1 and page.tags["meta"] >= 1 and 'charset="utf-8"' in html_text
    prefill, decode = "prefill: latency against sequence length", "decode: latency against sequence length"
    assert has_figures(html_text, SPEEDUP, prefill, SPEEDUP, decode, ROOFLINE, KV_BARS, HEATMAP), figures(
        html_text
    )
    assert page.tags["svg"] == 7
    assert (
        page.tags["script"] == 1 and page.tags["link"] == 0 and page.tags["img"] == 0
    )  # the inline sort script
    assert "src=" not in html_text and "@import" not in html_text and "http" not in html_text.split("<svg")[0]


def test_html_names_variants_backends_phases_and_environment(report):
    _, html_text, _ = report
    text = Page(html_text).all_text
    for name in [
        *VARIANTS,
        *BACKENDS,
        "prefill",
        "decode",
        RUN_1,
        RUN_2,
        DEVICE,
        HOST,
        "2.13.0+cu128",
        "3.6.0",
        "580.65.06",
        "4f2c9e1+dirty",
        "2025-03-01 12:00:00",
    ]:
        assert name in text, name
    assert "sequence length (tokens)" in html_text and "latency (ms)" in html_text
    assert "57 in the dataset, 54 kept" in text


def test_error_text_is_escaped_and_kept_whole(report):
    _, html_text, markdown = report
    assert "<ptxas>" not in html_text and "<kernels/flash.py>" not in html_text
    assert "&lt;ptxas&gt;" in html_text and "&amp; spills" in html_text
    page = Page(html_text)
    assert TRACEBACK in page.all_text  # the <pre> holds the whole traceback, unescaped by the parser
    assert page.tags["details"] == 1
    assert "<ptxas>" not in markdown and "&lt;ptxas&gt;" in markdown


def test_interpreted_rows_are_marked_and_never_ranked(report):
    _, html_text, markdown = report
    page = Page(html_text)
    interpreted = [cells for cls, cells in page.rows if cls == "interp"]
    assert len(interpreted) == 3 + 9  # decode pivot: 3 variants; all-metrics: 3 variants × 3 seq_lens
    assert not any("best" in c for cells in interpreted for c in cells)
    assert any("best" in c for _, cells in page.rows for c in cells)
    assert "triton †" in page.all_text and "CPU interpreter" in page.all_text
    assert "triton †" in markdown and "CPU interpreter" in markdown


def test_latest_ok_row_of_each_trial_is_kept(results_df):
    kept = latest_per_trial(load_results(results_df))
    assert len(kept) == len(results_df) - 3  # three trials ran twice

    def pick(point):
        mask = pd.Series(True, index=kept.index)
        for column, value in point.items():
            mask &= kept[column] == value
        assert mask.sum() == 1
        return kept[mask].iloc[0]

    assert pick(FASTER_TRIAL)["latency_ms"] == FASTER_LATENCY and pick(FASTER_TRIAL)["run_id"] == RUN_2
    assert pick(KEPT_TRIAL)["status"] == "ok" and pick(KEPT_TRIAL)["run_id"] == RUN_1  # run 2 timed out
    assert pick(OOM_TRIAL)["status"] == "ok" and pick(OOM_TRIAL)["run_id"] == RUN_2
    assert pick(ERROR_TRIAL)["status"] == "error"  # never succeeded: its latest row


def test_report_uses_the_newer_run(report):
    _, html_text, markdown = report
    assert fmt(FASTER_LATENCY) == "0.0123"
    assert "**0.0123**" in markdown  # the newer, faster value, and the fastest at its length
    assert "2 failed rows are not listed" in markdown
    assert "Selection rule" in html_text and "Selection rule" in markdown


def test_summary_markdown_has_the_tables(report):
    _, _, markdown = report
    tables = md_tables(markdown)
    headers = [t[0] for t in tables]
    assert any(h.startswith("| status | rows (all runs) | kept |") for h in headers)
    assert sum(h.startswith("| variant | backend | kv heads | 128 | 384 | 1000 |") for h in headers) == 2
    assert any("max abs err" in h and "rel err" in h for h in headers)
    assert any(h.startswith("| status | variant | backend | phase |") for h in headers)
    assert any("reason" in h for h in headers)
    for heading in ("## Phase: prefill", "## Phase: decode", "## Accuracy", "## Failures"):
        assert heading in markdown
    assert "| error | mqa | triton | prefill | 1 | RuntimeError: triton compile failed" in markdown
    assert "<svg" not in markdown and len(markdown) < 8000


def test_failures_only_dataset(results_df, tmp_path):
    paths = build_report(results_df[results_df["status"] != "ok"], tmp_path)
    html_text = paths.html.read_text(encoding="utf-8")
    page = Page(html_text)
    assert page.errors == [] and page.tags["svg"] == 0
    assert "No ok rows in this phase" in page.all_text
    assert "No row has an accuracy measurement." in page.all_text
    assert "&lt;ptxas&gt;" in html_text and "unsupported" in page.all_text


def test_single_seq_len_still_plots(results_df, tmp_path):
    paths = build_report(results_df[results_df["seq_len"] == 384], tmp_path)
    page = Page(paths.html.read_text(encoding="utf-8"))
    assert page.errors == [] and page.tags["svg"] == 7  # as the full fixture: a single length still plots
    assert "| variant | backend | kv heads | 384 |" in paths.markdown.read_text(encoding="utf-8")


def test_phase_with_only_interpreted_rows(results_df, tmp_path):
    only = results_df[(results_df["backend"] == "triton") & (results_df["phase"] == "decode")]
    paths = build_report(only, tmp_path, title="interpreted <only>")
    html_text = paths.html.read_text(encoding="utf-8")
    page = Page(html_text)
    # No measured row: no speedup and no roofline, but the latency (dashed), KV cache and accuracy.
    assert page.errors == [] and has_figures(html_text, "decode: latency", KV_BARS, HEATMAP), figures(
        html_text
    )
    assert "No measured rows (ok, not interpreted) in this phase." in html_text  # the glance says why
    assert "<title>interpreted &lt;only&gt;</title>" in html_text
    assert not any("best" in c for _, cells in page.rows for c in cells)
    assert "(interpreted †)" in html_text  # the legend entry of the dashed lines


def test_missing_optional_values(results_df, tmp_path):
    sparse = results_df.drop(columns=["tflops", "gbps", "latency_ms_p20", "driver_version", "max_abs_err"])
    sparse["rel_err"] = None
    sparse["causal"] = None
    sparse.loc[sparse.index[:10], ["latency_ms", "timestamp", "trial_id", "host"]] = None
    paths = build_report(sparse, tmp_path)
    html_text = paths.html.read_text(encoding="utf-8")
    page = Page(html_text)
    # No rel_err anywhere: no heatmap; missing causal values still match the baseline.
    assert page.errors == [] and page.tags["svg"] == 6 and HEATMAP not in html_text
    assert "—" in page.all_text and SPEEDUP in html_text


@pytest.mark.parametrize("kind", ["dataframe", "directory"])
def test_empty_dataset_raises(results_df, tmp_path, kind):
    if kind == "dataframe":
        results = results_df.iloc[:0]
    else:
        results = tmp_path / "empty-sweep"
        results.mkdir()
    with pytest.raises(ValueError, match="no result rows"):
        build_report(results, tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()


@pytest.mark.parametrize(
    "value, text",
    [
        (1.0, "1.00"),
        (0.012345, "0.0123"),
        (123.4, "123"),
        (45678.9, "45679"),
        (2.5e-5, "2.50e-05"),
        (3.2e7, "3.20e+07"),
        (0, "0"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_fmt_three_significant_digits(value, text):
    assert fmt(value) == text


def test_error_summary_names_the_exception():
    assert error_summary(TRACEBACK).startswith("RuntimeError: triton compile failed")
    assert error_summary("CUDA out of memory.\nmore") == "CUDA out of memory."
    assert error_summary(None) == "(no message)"


def test_import_loads_neither_torch_nor_triton():
    code = "import analysis.report, sys; assert 'torch' not in sys.modules and 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_kv_cache_section_lists_every_configuration(results_df, tmp_path):
    """One row per (variant, heads, kv heads, head dim, dtype, params) with the cost model's bytes."""
    paths = build_report(results_df, tmp_path)
    markdown = paths.markdown.read_text(encoding="utf-8")
    section = markdown.split("## KV cache per token", 1)[1].split("\n## ", 1)[0]
    expected = results_df.dropna(subset=["kv_bytes_per_token"]).drop_duplicates(
        ["variant", "n_heads", "n_kv_heads", "head_dim", "dtype", "params"]
    )
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(expected) > 0
    for _, r in expected.iterrows():
        assert any(
            line.startswith(f"| {r['variant']} ") and f"| {fmt(r['kv_bytes_per_token'])} |" in line
            for line in rows
        )


def test_gpu_clocks_in_the_environment_and_throttled_rows_marked(results_df, tmp_path):
    gpu = results_df[results_df["status"].eq("ok")].head(6).copy()
    gpu = gpu.assign(
        device="NVIDIA H100",
        sm_clock_mhz=[1980, 1980, 1755, 1980, 1980, 1980],
        mem_clock_mhz=2619,
        temp_c=[55, 56, 71, 57, 58, 58],
        power_w=350.0,
        throttled=[False, False, True, False, False, False],
    )
    paths = build_report(gpu, tmp_path)
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert (
        "| GPU clocks | NVIDIA H100: SM 1755–1980 MHz (median 1980), memory 2619 MHz, up to 71 °C" in markdown
    )
    assert "1 of 6 rows throttled" in markdown
    assert "Rows whose GPU throttled around the timed calls (1; the first 1 shown)." in markdown


def test_without_nvml_readings_the_environment_says_so(report):
    _, _, markdown = report
    assert "| GPU clocks | — (no NVML readings: a CPU, or no nvidia-ml-py) |" in markdown
