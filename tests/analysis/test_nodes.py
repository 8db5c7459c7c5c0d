"""Where the trials ran: per node counts, and a slow node found on points measured on several nodes."""

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.nodes import node_table, nodes_blocks
from analysis.rows import load_results
from tests.analysis.conftest import make_row

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
NODE_A, NODE_B = "a" * 56, "b" * 56
POINTS = [("mha", "torch-sdpa", n) for n in (100, 384, 1000)] + [("gqa", "triton", n) for n in (100, 384)]


def rows_on(node: str, host: str, run_id: str, slower: float = 1.0, **changes) -> list[dict]:
    rows = []
    for i, (variant, backend, seq_len) in enumerate(POINTS):
        row = make_row(
            run_id,
            T0 + timedelta(seconds=i),
            variant=variant,
            backend=backend,
            phase="prefill",
            seq_len=seq_len,
        )
        row.update(node=node, host=host, **changes)
        row["latency_ms"] *= slower
        rows.append(row)
    return rows


def frame(*groups: list[dict]) -> pd.DataFrame:
    return load_results(pd.DataFrame([row for group in groups for row in group]))


def test_one_node_gets_no_table():
    assert nodes_blocks(frame(rows_on(NODE_A, "gpu-1", "run-1"))) == []


def test_points_measured_once_are_counted_but_not_compared():
    """Each point on one node only: the table counts rows per node and says speeds cannot be compared."""
    a = rows_on(NODE_A, "gpu-1", "run-1")[:3]
    b = rows_on(NODE_B, "gpu-2", "run-1")[3:]
    b[0].update(status="error", latency_ms=None, error="Traceback: boom")
    table = node_table(frame(a, b))
    assert list(table["host"]) == ["gpu-1", "gpu-2"] and list(table["rows"]) == [3, 2]
    assert list(table["failed"]) == [0, 1] and "vs_point_median" not in table
    blocks = nodes_blocks(frame(a, b))
    assert "cannot be compared" in blocks[-1].content
    assert blocks[1].content.rows[0][1] == NODE_A[:12]


@pytest.mark.parametrize("slower", [1.3, 2.0], ids=["30pct-slower", "2x-slower"])
def test_a_slow_node_stands_out_on_points_it_shares(slower):
    """The same 5 points run on both nodes (two runs): node B's rows take `slower` times as long."""
    df = frame(rows_on(NODE_A, "gpu-1", "run-1"), rows_on(NODE_B, "gpu-2", "run-2", slower=slower))
    ratio = node_table(df).set_index("host")["vs_point_median"]
    middle = (1 + slower) / 2  # the median of two rows is their mean
    assert ratio["gpu-2"] == pytest.approx(slower / middle) and ratio["gpu-1"] == pytest.approx(1 / middle)
    assert "above 1: slower" in nodes_blocks(df)[-1].content
