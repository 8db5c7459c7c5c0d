"""What a report is made of: blocks (headings, notes, tables, raw HTML) that render to HTML and Markdown."""

import math
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Cell:
    """A numeric cell: right-aligned, an optional second line (HTML only), bold when best."""

    text: str
    sub: str = ""
    best: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    interpreted: list[bool] = field(default_factory=list)

    def add(self, cells: list, interpreted: bool = False) -> None:
        self.rows.append(cells)
        self.interpreted.append(interpreted)


@dataclass(frozen=True)
class Block:
    kind: str  # "h2" | "h3" | "p" | "table" | "raw" (HTML markup, never in the Markdown)
    content: object
    markdown: bool = True
    html: bool = True


def fmt(value: object, digits: int = 3) -> str:
    """Three significant digits, plain notation from 0.001 to 999999, an em dash when missing."""
    if value is None or pd.isna(value):
        return "—"
    x = float(value)
    if x == 0 or not math.isfinite(x):
        return str(x) if x else "0"
    magnitude = math.floor(math.log10(abs(x)))
    if -3 <= magnitude < 6:
        return f"{x:.{max(0, digits - 1 - magnitude)}f}"
    return f"{x:.{digits - 1}e}"


def mib(value: object) -> str:
    return "—" if value is None or pd.isna(value) else fmt(float(value) / 2**20)
