"""Rendering (analysis.render) and row selection (analysis.rows): sortable tables, one inline script,
capped tables that still show every group."""

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.blocks import Block, Cell, Table
from analysis.render import SORT_SCRIPT, html_table, render_html, render_markdown
from analysis.rows import fair_head, latest_per_trial, load_results, shown_note
from tests.analysis.conftest import fixture_rows
from tests.analysis.test_report import Page


def test_headed_tables_are_sortable_and_cells_with_a_second_line_carry_their_value():
    table = Table(["variant", "latency ms"])
    table.add(["mha", Cell("0.0123", "0.0119–0.0128", best=True)])
    table.add(["gqa", Cell("1.50e-03")], interpreted=True)
    markup = html_table(table)
    assert '<table class="sortable">' in markup
    assert '<td class="num best" data-sort="0.0123">0.0123<small>0.0119–0.0128</small></td>' in markup
    assert '<td class="num">1.50e-03</td>' in markup and '<tr class="interp">' in markup


def test_key_value_tables_are_not_sortable():
    table = Table(["", ""])
    table.add(["device", "H100"])
    assert 'class="facts"' in html_table(table) and "sortable" not in html_table(table)


def test_page_has_one_inline_script_after_the_content():
    page_text = render_html("t", [Block("h2", "A"), Block("table", Table(["x"], [["1"]], [False]))])
    page = Page(page_text)
    assert page.errors == [] and page.tags["script"] == 1 and "src=" not in page_text
    assert page_text.index("<script>") > page_text.index("</table>")  # tables exist when it runs
    assert SORT_SCRIPT.strip() in page_text


def test_page_without_sortable_has_no_script():
    assert "<script" not in render_html("t", [Block("p", "x")], sortable=False)


def test_markdown_leaves_out_html_only_blocks():
    blocks = [Block("p", "both"), Block("p", "html only", markdown=False), Block("raw", "<svg/>")]
    assert render_markdown("t", blocks) == "# t\n\nboth\n"


@pytest.mark.parametrize(
    "limit, expected",
    [
        pytest.param(10, list("aaabbc"), id="under-the-cap"),
        pytest.param(3, list("abc"), id="one-of-each-group"),
        pytest.param(5, list("aabbc"), id="round-robin-in-frame-order"),
        pytest.param(2, list("ab"), id="fewer-than-groups"),
    ],
)
def test_fair_head(limit, expected):
    frame = pd.DataFrame({"group": list("aaabbc"), "i": range(6)})
    assert list(fair_head(frame, ["group"], limit)["group"]) == expected


def test_shown_note():
    assert shown_note(5, 5, "rows", "x") == ""
    assert (
        shown_note(3, 7, "rows", "the first of each")
        == "Showing 3 of 7 rows (the first of each); the dataset holds all."
    )


def test_latest_per_trial_without_trial_ids_keys_on_the_configuration():
    run1, run2 = fixture_rows()
    df = load_results(pd.DataFrame(run1 + run2).assign(trial_id=None))
    kept = latest_per_trial(df)
    assert len(kept) == len(df) - 3  # the same three trials ran twice
    assert kept.index.is_monotonic_increasing
