"""build_report's page, and write_comparison's, in a real browser: headless Chromium (Debian's `chromium`;
this module's set-up installs it with apt-get when it is missing and we are root), run with --headless
--no-sandbox --disable-gpu at a laptop's 1366×900. A page must load without console errors, fit the
screen's width, sort its tables when a header is clicked, and its screenshot must not be blank.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

# Hosts without matplotlib or PIL (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

from PIL import Image, ImageStat

from analysis.compare_report import write_comparison
from analysis.report import build_report
from tests.analysis.chromium import WINDOW, DevTools, install_chromium, screenshot
from tests.analysis.conftest import TRACEBACK, heads_rows, vendor_rows
from tests.analysis.test_compare import is_triton, measure, result_row, sweep_points, write_dataset
from tests.analysis.test_quality import make_rows as quality_rows

EVERY_HEADER = "[...document.querySelectorAll('table.sortable thead th')]"


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        binary = install_chromium()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        binary, why = None, f"installing it failed: {exc}"
    else:
        why = "it is not installed and this is not root with apt-get"
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium is needed for the browser tests; {why}")
        pytest.skip(f"no chromium: {why}")
    return binary


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of a fixture dataset with every section: three phases over 4/6/12 heads, failures,
    interpreted rows, and the trained phases. Against a fixed baseline, whose row says 'baseline' in
    the speedup column (the sort test below); the default, best, has its own test."""
    rows = pd.concat([pd.DataFrame(heads_rows()), quality_rows()], ignore_index=True)
    return build_report(rows, tmp_path_factory.mktemp("browser-report"), baseline="mha/torch-sdpa").html


@pytest.fixture(scope="module")
def page(chromium, report, tmp_path_factory):
    with DevTools(chromium, tmp_path_factory.mktemp("devtools") / "profile") as browser:
        browser.open(report.as_uri())
        yield browser


def assert_not_blank(shot: Path, suffix: str = "") -> None:
    image = Image.open(shot).convert("L")
    assert image.size == WINDOW
    assert ImageStat.Stat(image).stddev[0] > 20  # a blank or single-colour page has none
    inked = sum(image.histogram()[:200]) / (image.width * image.height)
    assert 0.02 < inked < 0.6, f"share of dark pixels {inked:.3f}"
    if keep := os.environ.get("ATTNSWEEP_KEEP_SCREENSHOT"):  # to look at it: a path to copy it to
        keep = Path(keep)
        shutil.copy(shot, keep.with_name(f"{keep.stem}{suffix}{keep.suffix}"))


def test_screenshot_is_not_blank(chromium, report, tmp_path):
    shot = tmp_path / "report.png"
    done = screenshot(chromium, report.as_uri(), shot, tmp_path / "profile")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert_not_blank(shot)


def test_no_console_errors(page):
    assert page.problems() == []


def test_page_fits_a_laptop_screen(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WINDOW[0], "wide tables must scroll in their own box, not the page"
    first_section = page.evaluate("document.querySelector('h2').getBoundingClientRect().top")
    assert first_section < WINDOW[1] / 3  # the environment heads the report, on the first screen


SORT_COLUMN = """
(() => {
  const header = t => t.tHead.rows[0].cells[%(column)d];
  const table = [...document.querySelectorAll("table.sortable")]
    .find(t => header(t) && header(t).textContent === %(header)r);
  const th = header(table);
  const value = cell => cell.getAttribute("data-sort") || cell.textContent;
  const values = () => [...table.tBodies[0].rows].map(r => value(r.cells[%(column)d]));
  th.click();
  const up = [values(), th.getAttribute("aria-sort")];
  th.click();
  return {up: up[0], upSort: up[1], down: values(), downSort: th.getAttribute("aria-sort")};
})()
"""


def _number(text: str) -> float:
    return float(text.split("–")[0].rstrip("×%"))


@pytest.mark.parametrize(
    "column, header",
    [
        pytest.param(5, "best TFLOP/s", id="numbers"),
        pytest.param(3, "× mha/torch-sdpa", id="ratios-and-the-word-baseline"),
        pytest.param(4, "min–max", id="ranges-with-missing-values"),
    ],
)
def test_clicking_a_header_sorts_its_column(page, column, header):
    got = page.evaluate(SORT_COLUMN % {"column": column, "header": header})
    assert (got["upSort"], got["downSort"]) == ("ascending", "descending")
    for values, descending in ((got["up"], False), (got["down"], True)):
        present = [v for v in values if v != "—"]
        assert values == present + ["—"] * (len(values) - len(present))  # missing last, either way
        numbers = [_number(v) for v in present if v[0].isdigit()]
        assert numbers == sorted(numbers, reverse=descending) and len(numbers) >= 2
        words = [v for v in present if not v[0].isdigit()]
        # Ascending: numbers, then words; descending: the reverse.
        assert present == (
            [*words, *present[len(words) :]] if descending else [*present[: len(numbers)], *words]
        )


def test_every_header_sorts_without_errors(page):
    clicked = page.evaluate(f"{EVERY_HEADER}.map(th => (th.click(), th.click(), 1)).length")
    assert clicked > 50 and page.problems() == []


def test_a_page_with_a_script_error_is_caught(chromium, tmp_path):
    """The check above can fail: a page that throws and logs an error is reported."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!doctype html><title>x</title><script>console.error('planted'); notDefined();</script>"
    )
    with DevTools(chromium, tmp_path / "profile") as browser:
        browser.open(broken.as_uri())
        problems = browser.problems()
    assert any("planted" in p for p in problems) and any("notDefined" in p for p in problems)


def test_comparison_page_loads_fits_sorts_and_is_not_blank(chromium, tmp_path):
    """write_comparison's page of two small datasets: triton 20% slower in NEW (the planted slowdown),
    a point that now fails with a traceback, and points only in BASE."""
    base = measure(sweep_points((100, 384, 1000)), "run-base")
    trials = sweep_points((100, 384))
    new = measure(trials, "run-new", scale=lambda t: 1.2 if is_triton(t) else 1.0, noise=0.01)
    new[1] = result_row(trials[1], "run-new", new[1]["timestamp"], None, status="error", error=TRACEBACK)
    out = write_comparison(
        str(write_dataset(tmp_path / "base", base)),
        str(write_dataset(tmp_path / "new", new)),
        tmp_path / "cmp",
    )
    assert out.comparison.flagged["backend"].value_counts().to_dict() == {"triton": 12, "torch-ref": 1}
    with DevTools(chromium, tmp_path / "profile") as browser:
        browser.open(out.html.as_uri())
        shot = browser.screenshot(tmp_path / "compare.png")
        width = browser.evaluate("document.documentElement.scrollWidth")
        title = browser.evaluate("document.querySelector('h1').textContent")
        headline = browser.evaluate("document.querySelector('h2 + h3').textContent")
        clicked = browser.evaluate(f"{EVERY_HEADER}.map(th => (th.click(), th.click(), 1)).length")
        problems = browser.problems()
    assert problems == []
    assert title == "attnsweep compare: base/smoke → new/smoke"  # the full paths: in the Summary
    assert headline.startswith("REGRESSION: 13 point(s) flagged")
    assert width <= WINDOW[0], "wide tables must scroll in their own box, not the page"
    assert clicked > 40  # every table but the facts sorts
    assert_not_blank(shot, "-compare")


GLANCE_AND_DISPATCH = """
(() => {
  const tables = [...document.querySelectorAll("table.sortable")];
  const headers = t => [...t.tHead.rows[0].cells].map(th => th.textContent);
  const glance = tables.find(t => headers(t)[3] === "× best");
  const dispatch = tables.find(t => headers(t).includes("picked kernel"));
  const column = headers(dispatch).indexOf("picked kernel");
  const th = dispatch.tHead.rows[0].cells[column];
  th.click();
  const picked = [...dispatch.tBodies[0].rows].map(r => r.cells[column].textContent);
  return {
    heading: glance.closest(".scroll").previousElementSibling.previousElementSibling.textContent,
    speedups: [...glance.tBodies[0].rows].map(r => r.cells[1].textContent + " " + r.cells[3].textContent),
    under: glance.closest(".scroll").nextElementSibling.textContent,
    picked: picked,
    sort: th.getAttribute("aria-sort"),
    shown: glance.getBoundingClientRect().height > 0 && dispatch.getBoundingClientRect().height > 0,
  };
})()
"""


def test_glance_against_best_and_the_kernel_sdpa_picked(chromium, tmp_path):
    """The default baseline on a dataset of PyTorch's kernels: the glance table against the per-point
    fastest, the sentence naming them under it, and the dispatcher's picks, sortable."""
    html_path = build_report(pd.DataFrame(vendor_rows()), tmp_path / "vendor").html
    with DevTools(chromium, tmp_path / "profile") as browser:
        browser.open(html_path.as_uri())
        got = browser.evaluate(GLANCE_AND_DISPATCH)
        width = browser.evaluate("document.documentElement.scrollWidth")
        shot = browser.screenshot(tmp_path / "vendor.png")
        problems = browser.problems()
    assert problems == [] and got["shown"]
    assert got["heading"] == "prefill: at a glance, against the fastest PyTorch kernel of mha"
    assert "triton 1.43×" in got["speedups"] and "sdpa-math 0.219×" in got["speedups"]
    assert got["under"].startswith("Baseline best: at each point the fastest ok row of mha among torch-sdpa")
    assert got["under"].endswith(": sdpa-flash at 1 point, sdpa-cudnn at 1, flex at 1.")
    assert got["sort"] == "ascending" and got["picked"] == ["cudnn"] * 2 + ["flash"] * 4
    assert width <= WINDOW[0], "wide tables must scroll in their own box, not the page"
    assert_not_blank(shot, "-vendor")
