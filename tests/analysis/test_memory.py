"""Memory against heads (analysis.memory): KV cache per token and measured peak memory by query heads."""

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.memory import line_label, memory_blocks, memory_panels, memory_table
from analysis.rows import load_results
from tests.analysis.conftest import HEADS, HEADS_BATCH, HEADS_HEAD_DIM, HEADS_SEQ_LENS, heads_rows


@pytest.fixture(scope="module")
def kept():
    return load_results(pd.DataFrame(heads_rows()))


@pytest.mark.parametrize(
    "key, label",
    [
        pytest.param(("mha", 12, 12, "{}"), "mha kv=H", id="as-many-kv-as-query-heads"),
        pytest.param(("gqa", 2, 6, "{}"), "gqa kv=2", id="fixed-kv-heads"),
        pytest.param(("mla", 1, 12, '{"latent_dim":512}'), 'mla kv=1 {"latent_dim":512}', id="with-params"),
        pytest.param(("mqa", 1, 4, None), "mqa kv=1", id="no-params"),
    ],
)
def test_line_label(key, label):
    assert line_label(*key) == label


def test_kv_cache_per_token_by_heads_is_the_cost_models(kept):
    panel = memory_panels(kept, "torch-sdpa")[0]
    table = memory_table([panel])
    assert table.headers[3:] == [f"H={h}" for h in HEADS]
    by_line = {row[2]: [c.text for c in row[3:]] for row in table.rows}
    dtype_bytes = 2  # bfloat16
    kv_heads = {"mha kv=H": HEADS, "gqa kv=2": (2, 2, 2), "mqa kv=1": (1, 1, 1)}
    for line, kvs in kv_heads.items():
        expected = [2 * kv * HEADS_HEAD_DIM * dtype_bytes / 1024 for kv in kvs]
        assert [float(t) for t in by_line[line]] == pytest.approx(expected, rel=5e-3)


def test_peak_memory_panels_fix_one_backend_and_shape(kept):
    panels = memory_panels(kept, "torch-sdpa")
    assert [p.title for p in panels] == [
        "KV cache per token and layer",
        "prefill: measured peak memory",
        "decode: measured peak memory",
        "train: measured peak memory",
    ]
    longest = max(HEADS_SEQ_LENS)
    for panel in panels[1:]:
        assert panel.rows["backend"].eq("torch-sdpa").all()
        assert panel.rows["seq_len"].eq(longest).all() and panel.rows["batch"].eq(HEADS_BATCH).all()
        assert panel.shape == f"torch-sdpa, B={HEADS_BATCH} N={longest} d={HEADS_HEAD_DIM} bfloat16 causal"
        assert sorted(panel.rows["n_heads"].unique()) == list(HEADS)


def test_preferred_backend_without_memory_falls_back_to_the_most_common(kept):
    panels = memory_panels(kept, "no-such-backend")
    assert all(p.rows["backend"].nunique() == 1 for p in panels[1:])


def test_figure_has_labelled_axes_when_heads_vary(kept):
    blocks = memory_blocks(kept, "torch-sdpa")
    figure = next(b.content for b in blocks if b.kind == "raw")
    for text in ("query heads", "KV cache per token and layer (KiB", "measured peak memory (MiB"):
        assert text in figure


def test_one_head_count_gives_tables_only(kept):
    blocks = memory_blocks(kept[kept["n_heads"].eq(6)], "torch-sdpa")
    assert not any(b.kind == "raw" for b in blocks)
    assert any(b.kind == "table" for b in blocks)


def test_trained_phases_and_missing_sizes_are_left_out(kept):
    rows = kept.assign(kv_bytes_per_token=None, peak_mem_bytes=None)
    blocks = memory_blocks(load_results(rows), "torch-sdpa")
    assert [b.kind for b in blocks] == ["h2", "p"]
