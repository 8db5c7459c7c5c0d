"""The accuracy section (analysis.accuracy): worst errors per variant, backend and dtype; the heatmap."""

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.accuracy import MARKDOWN_ROWS, MAX_COLUMNS, accuracy_blocks, heatmap_grid
from analysis.rows import load_results
from tests.analysis.conftest import HEADS_SEQ_LENS, heads_rows


@pytest.fixture(scope="module")
def kept():
    return load_results(pd.DataFrame(heads_rows()))


def test_heatmap_cell_is_the_worst_rel_err_of_its_point(kept):
    rows = kept.copy()
    worst = rows.index[rows["variant"].eq("gqa") & rows["backend"].eq("triton") & rows["phase"].eq("decode")][
        0
    ]
    rows.loc[worst, "rel_err"] = 0.25
    grid, columns_are = heatmap_grid(rows)
    assert columns_are == "phase dtype sequence length"
    column = f"decode bfloat16 {rows.loc[worst, 'seq_len']}"
    assert grid.loc["gqa · triton", column] == 0.25
    assert list(grid.columns[:3]) == [f"prefill bfloat16 {n}" for n in HEADS_SEQ_LENS]  # phases, then lengths


def test_interpreted_rows_count_for_accuracy(kept):
    grid, _ = heatmap_grid(kept)
    assert grid.loc["mha · triton"].filter(like="decode").notna().all()  # triton decode ran interpreted


def test_too_many_points_pool_the_lengths(kept):
    lengths = kept.assign(seq_len=kept.index % (MAX_COLUMNS + 5) + 1)
    grid, columns_are = heatmap_grid(lengths)
    assert columns_are == "phase dtype" and list(grid.columns) == [
        "prefill bfloat16",
        "decode bfloat16",
        "train bfloat16",
    ]


def test_exact_zero_and_missing_errors_still_draw(kept):
    rows = kept.copy()
    rows.loc[rows["backend"].eq("torch-ref"), "rel_err"] = 0.0
    rows.loc[rows["variant"].eq("mqa"), "rel_err"] = None
    figure = next(b.content for b in accuracy_blocks(rows) if b.kind == "raw")
    assert "rel_err = ‖out − ref‖ / ‖ref‖ (log scale)" in figure and "variant · backend" in figure


def test_table_is_worst_first_and_summary_is_capped(kept):
    rows = pd.concat(
        [kept.assign(variant=f"v{i}", rel_err=kept["rel_err"] * (i + 1)) for i in range(8)], ignore_index=True
    )
    blocks = accuracy_blocks(rows)
    full = next(b.content for b in blocks if b.kind == "table" and not b.markdown)
    short = next(b.content for b in blocks if b.kind == "table" and not b.html)
    rel = [float(r[5].text) for r in full.rows]
    assert rel == sorted(rel, reverse=True) and len(full.rows) == 8 * 3
    assert len(short.rows) == MARKDOWN_ROWS and short.rows == full.rows[:MARKDOWN_ROWS]
    assert any(f"The {MARKDOWN_ROWS} worst of 24" in str(b.content) for b in blocks if not b.html)


def test_no_measurement_no_section_body(kept):
    blocks = accuracy_blocks(load_results(kept.assign(rel_err=None, max_abs_err=None)))
    assert [b.content for b in blocks][1:] == ["No row has an accuracy measurement."]


def _by_kind(kept: pd.DataFrame) -> pd.DataFrame:
    """The rows once per input kind: large_logits 20× worse for gqa on triton, 2× for everything else."""
    randn = kept.assign(inputs=None)  # rows from before the inputs axis: randn
    large = kept.assign(inputs="large_logits")
    cliff = large["variant"].eq("gqa") & large["backend"].eq("triton")
    large["rel_err"] = large["rel_err"] * cliff.map({True: 20.0, False: 2.0})
    return pd.concat([randn, large], ignore_index=True)


def test_accuracy_by_input_kind_marks_the_cliff(kept):
    rows = _by_kind(kept[kept["rel_err"].notna()])
    blocks = accuracy_blocks(rows)
    table = next(b.content for b in blocks if b.kind == "table")
    assert table.headers[:4] == ["variant", "backend", "dtype", "inputs"] and "× randn" in table.headers
    column = table.headers.index("× randn")
    marks = {(r[0], r[1], str(r[3])): r[column].text for r in table.rows}
    assert marks[("gqa", "triton", "large_logits")].endswith("cliff")
    assert marks[("mha", "triton", "large_logits")] == "2×"
    assert marks[("gqa", "triton", "randn")] == "1×"


def test_the_heatmap_splits_columns_by_input_kind(kept):
    grid, columns_are = heatmap_grid(_by_kind(kept[kept["rel_err"].notna()]))
    assert columns_are.startswith("inputs phase")
    assert grid.columns[0].startswith("randn prefill") and grid.columns[-1].startswith("large_logits")
