"""Blocks to pages: the self-contained HTML report and the Markdown summary.

The HTML carries its style and its one script inline (no external assets: it opens offline and from
an MLflow artifact view). The script sorts a table by the column whose header is clicked.
"""

import html
import numbers

import pandas as pd

from analysis.blocks import Block, Cell, Table, fmt
from analysis.plots import axis_value

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 auto;
 max-width:1280px;padding:1rem 1.5rem 3rem}
h1{font-size:1.6rem;margin-bottom:.3rem}
h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav{display:flex;flex-wrap:wrap;gap:.2rem 1rem;margin:.3rem 0 .8rem}p{max-width:60rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:13px}
th,td{border:1px solid #dcdcdc;padding:.2rem .55rem;text-align:left;vertical-align:top;white-space:nowrap}
td:last-child{white-space:normal}
thead th{background:#f3f4f6;white-space:nowrap}table.facts td:first-child{font-weight:600;background:#f8f8f8}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#e5e7eb}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td small{display:block;color:#777;font-size:11px}td.best{font-weight:700;background:#e8f5e9}
tr.interp td{color:#8a8a8a;font-style:italic}
figure{margin:.5rem 0}svg{max-width:100%;height:auto}figcaption{color:#555;font-size:13px}
details pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:.5rem;max-width:60rem}
"""

# Click (or Enter on) a header: sort the body rows by that column, again: the other way. Numbers sort
# as numbers ("1.50e-03", "2.1×", "93%", a range "1.2–3.4" by its low end), other text naturally;
# empty cells and "—" stay last either way.
SORT_SCRIPT = """
(function () {
  var NUMBER = /^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?(?=$|[\\s×%±(–])/i;
  function key(cell) {
    var text = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    text = text.trim();
    if (text === "" || text === "\\u2014") return null;
    return NUMBER.test(text) ? parseFloat(text) : text;
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "number") return -1;
    if (typeof b === "number") return 1;
    return a.localeCompare(b, undefined, {numeric: true});
  }
  function sortBy(table, th, column) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return [row.cells[column] ? key(row.cells[column]) : null, i, row];
    });
    rows.sort(function (a, b) {
      if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null) || a[1] - b[1];
      return (ascending ? compare(a[0], b[0]) : compare(b[0], a[0])) || a[1] - b[1];
    });
    rows.forEach(function (r) { body.appendChild(r[2]); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, column); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, th, column); }
      });
    });
  });
})();
"""


def _html_cell(c: object) -> str:
    if isinstance(c, Cell):
        sub = f"<small>{html.escape(c.sub)}</small>" if c.sub else ""
        # With a second line the cell's text is not its value: the sort reads data-sort instead.
        key = f' data-sort="{html.escape(c.text)}"' if c.sub else ""
        return f'<td class="num{" best" if c.best else ""}"{key}>{html.escape(c.text)}{sub}</td>'
    return f"<td>{html.escape(axis_value(c))}</td>"


def html_table(table: Table) -> str:
    """A table as HTML: sortable by column when it has headers, a key-value list when it has none."""
    body = "".join(
        ('<tr class="interp">' if i else "<tr>") + "".join(map(_html_cell, r)) + "</tr>"
        for r, i in zip(table.rows, table.interpreted, strict=True)
    )
    if not any(table.headers):
        return f'<table class="facts"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    table_html = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table_html}</div>'


def md_table(table: Table) -> str:
    def cell(c: object) -> str:
        text = (f"**{c.text}**" if c.best else c.text) if isinstance(c, Cell) else axis_value(c)
        # GitHub would read '<...>' from the data as HTML and hide it.
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, table.headers)) + " |", "|" + "---|" * len(table.headers)]
    return "\n".join([*lines, *("| " + " | ".join(map(cell, r)) + " |" for r in table.rows)])


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, numbers to three significant digits (for benchmark scripts)."""
    table = Table(headers=[str(c) for c in frame.columns])
    for row in frame.itertuples(index=False):
        table.add(
            [
                Cell(fmt(v)) if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) else v
                for v in row
            ]
        )
    return md_table(table)


def anchor(heading: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in heading.lower()).split())


def render_html(title: str, blocks: list[Block], *, sortable: bool = True) -> str:
    """The page; with `sortable`, the inline script that sorts tables by a clicked column header."""
    parts, nav = [], []
    for block in (b for b in blocks if b.html):
        text = html.escape(str(block.content))
        if block.kind == "h2":
            nav.append(f'<a href="#{anchor(str(block.content))}">{text}</a>')
            parts.append(f'<h2 id="{anchor(str(block.content))}">{text}</h2>')
        elif block.kind in ("h3", "p"):
            parts.append(f"<{block.kind}>{text}</{block.kind}>")
        else:
            parts.append(html_table(block.content) if block.kind == "table" else str(block.content))
    head = (
        f'<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>"
    )
    body = f"<h1>{html.escape(title)}</h1>\n<nav>{''.join(nav)}</nav>\n" + "\n".join(parts)
    script = f"<script>{SORT_SCRIPT}</script>" if sortable else ""
    page = f"<head>\n{head}\n</head>\n<body>\n{body}\n{script}</body>"
    return f'<!doctype html>\n<html lang="en">\n{page}\n</html>\n'


def render_markdown(title: str, blocks: list[Block]) -> str:
    prefix = {"h2": "## ", "h3": "### ", "p": ""}
    parts = [f"# {title}"]
    for block in (b for b in blocks if b.markdown and b.kind != "raw"):
        is_table = block.kind == "table"
        parts.append(md_table(block.content) if is_table else prefix[block.kind] + str(block.content))
    return "\n\n".join(parts) + "\n"
