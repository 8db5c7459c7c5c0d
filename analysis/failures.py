"""The Failures section: what did not finish, grouped, with every traceback a click away.

A failure is a result (docs/architecture.md §2): the rows an oom, an error or a timeout left.
Unsupported rows are by design and listed apart. At scale the grouped table carries the counts and
the per-row list is capped.
"""

import html

import pandas as pd

from analysis.blocks import Block, Cell, Table
from analysis.plots import axis_value
from analysis.rows import error_summary, fair_head, point_label, shown_note, text
from analysis.schema import PLANNED_STATUSES

GROUP = ["status", "variant", "backend", "phase"]
MAX_GROUPS_MARKDOWN = 15
MAX_ROWS = 100  # rows with their traceback in the HTML


def failure_rows_html(failed: pd.DataFrame) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("status", "variant", "backend", "phase", "point", "error"))
    items = []
    for _, r in failed.iterrows():
        cells = "".join(f"<td>{html.escape(axis_value(r[c]))}</td>" for c in GROUP)
        details = (
            f"<details><summary>{html.escape(error_summary(r['error']))}</summary>"
            f"<pre>{html.escape(text(r['error']))}</pre></details>"
        )
        items.append(f"<tr>{cells}<td>{html.escape(point_label(r))}</td><td>{details}</td></tr>")
    table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(items)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def failures_blocks(df: pd.DataFrame, kept: pd.DataFrame) -> list[Block]:
    """The section from all rows (`df`, for the count of superseded failures) and the kept ones."""
    blocks = [Block("h2", "Failures")]
    failed = kept[~kept["status"].isin(PLANNED_STATUSES)].sort_values(
        [*GROUP, "seq_len"], na_position="last", kind="stable"
    )
    hidden = int((~df["status"].isin(PLANNED_STATUSES)).sum()) - len(failed)
    if hidden:
        blocks.append(
            Block(
                "p",
                f"{hidden} failed rows are not listed: the selection rule keeps another row "
                "of their trial (an ok one, or a later failure).",
            )
        )
    if failed.empty:
        blocks.append(Block("p", "No failures."))
    else:
        headers = [*GROUP, "rows", "error (first of the group)"]
        full, short = Table(headers), Table(headers)
        groups = failed.groupby(GROUP, dropna=False, sort=False)
        for key, g in groups:
            cells = [*key, Cell(str(len(g))), error_summary(g["error"].iloc[0], 100)]
            full.add(cells)
            if len(short.rows) < MAX_GROUPS_MARKDOWN:
                short.add(cells)
        blocks += [Block("table", short, html=False), Block("table", full, markdown=False)]
        if groups.ngroups > MAX_GROUPS_MARKDOWN:
            blocks.append(
                Block(
                    "p", f"{MAX_GROUPS_MARKDOWN} of {groups.ngroups} groups; the report has all.", html=False
                )
            )
        listed = fair_head(failed, GROUP, MAX_ROWS)
        cap = shown_note(len(listed), len(failed), "failed rows", "the first of every group")
        blocks += [Block("p", cap, markdown=False)] if cap else []
        blocks.append(Block("raw", failure_rows_html(listed)))
    unsupported = kept[kept["status"].eq("unsupported")]
    if not unsupported.empty:
        table = Table(["variant", "backend", "phase", "reason", "rows"])
        reasons = unsupported.assign(reason=unsupported["error"].map(error_summary))
        counts = reasons.groupby(["variant", "backend", "phase", "reason"], dropna=False).size()
        for key, n in counts.items():
            table.add([*key, Cell(str(n))])
        note = (
            f"Unsupported rows: {len(unsupported)}, in {len(counts)} combinations a variant does not offer."
        )
        blocks += [
            Block("h3", "Unsupported (by design, not failures)"),
            Block("p", note),
            Block("table", table, markdown=len(counts) <= MAX_GROUPS_MARKDOWN),
        ]
    return blocks
