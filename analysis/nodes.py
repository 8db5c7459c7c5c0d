"""Where the trials ran: one line per worker node (Ray node id and hostname), so that a node that
failed trials or ran slower than the others stands out.

Slower is measured only where it can be: on points (the same configuration) that have measured rows
on more than one node, e.g. a sweep run twice or with repeats. Each such row's latency is divided by
the median latency of its point over all nodes; a node's number is the median of those ratios
(above 1: slower than the point's typical node). With every point measured once there is nothing to
compare, and the column is left out."""

import pandas as pd

from analysis.blocks import Block, Cell, Table, fmt
from analysis.rows import measured
from analysis.schema import CONFIG_COLUMNS, FAILED_STATUSES

NODE_ID_CHARS = 12  # Ray node ids are 56 hex digits; a prefix tells them apart


def node_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (host, node): rows, ok, failed, and `vs_point_median` where points ran on several nodes."""
    where = df.assign(host=df["host"].fillna(""), node=df["node"].fillna(""))
    table = where.groupby(["host", "node"]).agg(
        rows=("status", "size"),
        ok=("status", lambda s: int(s.eq("ok").sum())),
        failed=("status", lambda s: int(s.isin(FAILED_STATUSES).sum())),
    )
    timed = measured(where)
    points = timed.groupby(list(CONFIG_COLUMNS), dropna=False)
    shared = points["node"].transform("nunique") > 1
    if shared.any():
        ratio = timed["latency_ms"] / points["latency_ms"].transform("median")
        table["vs_point_median"] = ratio[shared].groupby([timed["host"], timed["node"]]).median()
    return table.reset_index().sort_values(["host", "node"])


def nodes_blocks(df: pd.DataFrame) -> list[Block]:
    """The table, when the rows name more than one node (nothing for a one-machine sweep)."""
    nodes = node_table(df)
    if len(nodes) < 2:
        return []
    compared = "vs_point_median" in nodes
    headers = ["host", "node", "rows", "ok", "failed"] + (
        ["latency vs the point's median"] if compared else []
    )
    table = Table(headers)
    for r in nodes.itertuples(index=False):
        cells = [
            r.host or "—",
            r.node[:NODE_ID_CHARS] or "—",
            Cell(str(r.rows)),
            Cell(str(r.ok)),
            Cell(str(r.failed)),
        ]
        if compared:
            cells.append(Cell(fmt(r.vs_point_median) + "×" if pd.notna(r.vs_point_median) else "—"))
        table.add(cells)
    note = (
        "Latency vs the point's median: over the points measured on more than one node, each row's "
        "latency over its point's median latency on all nodes; the median per node (above 1: slower)."
        if compared
        else "Every point was measured on one node only, so the nodes' speeds cannot be compared here."
    )
    return [Block("h3", "Where the trials ran"), Block("table", table), Block("p", note)]
