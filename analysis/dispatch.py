"""Which kernel SDPA's dispatcher picked: per phase, the torch-sdpa rows that recorded what one call
launched (the `kernels` column), each classified as flash, efficient, cudnn, math or other."""

import re

import pandas as pd

from analysis.blocks import Block, Cell, Table
from analysis.plots import axis_value
from analysis.rows import fair_head, shown_note, tally_points

DISPATCHER = "torch-sdpa"
# Checked in this order over the whole list, so that a fused kernel wins over a softmax of the variant's
# own (a router's) and cuDNN's 'flash_fprop' kernels count as cudnn. GPU names: pytorch_flash::flash_fwd_
# kernel, fmha_cutlassF_* (memory-efficient), cudnn_generated_*_sdpa_*; math launches plain gemms and a
# softmax. CPU: the op scaled_dot_product_attention dispatched to (aten::_scaled_dot_product_*).
KERNEL_PATTERNS = (
    ("cudnn", re.compile(r"cudnn", re.I)),
    ("flash", re.compile(r"flash", re.I)),
    ("efficient", re.compile(r"fmha_cutlass|efficient_attention|mem_?eff", re.I)),
    ("math", re.compile(r"_scaled_dot_product_attention_math|softmax", re.I)),
)
KINDS = ("flash", "efficient", "cudnn", "math", "other")  # the order a tally names them in
POINT_AXES = ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim", "dtype", "causal")
HTML_ROWS = 300
MARKDOWN_ROWS = 15
MARKDOWN_NAME = 100  # characters of a kernel name in summary.md (a CUDA template's can run to 500)


def kernel_names(value: object) -> list[str]:
    """A `kernels` cell as a list of names: a list or an array from Parquet; missing: empty."""
    if value is None or isinstance(value, (float, str)):
        return []
    return [str(name) for name in value]


def classify_kernels(names: list[str]) -> tuple[str, str]:
    """(flash | efficient | cudnn | math | other, the first name that says so); for other, the first
    name of the list; ('', '') for an empty list."""
    for kind, pattern in KERNEL_PATTERNS:
        for name in names:
            if pattern.search(name):
                return kind, name
    return ("other", names[0]) if names else ("", "")


def picked_kernels(rows: pd.DataFrame) -> pd.DataFrame:
    """The torch-sdpa rows with a recorded kernel list, with `picked` and `kernel` (classify_kernels)."""
    rows = rows[rows["backend"].eq(DISPATCHER)]
    names = rows["kernels"].map(kernel_names)
    rows, names = rows[names.map(bool)], names[names.map(bool)]
    found = [classify_kernels(n) for n in names]
    return rows.assign(picked=[k for k, _ in found], kernel=[n for _, n in found])


def _table(picked: pd.DataFrame, devices: bool, name_limit: int = 10_000) -> Table:
    headers = ["variant", *(["device"] if devices else []), "B", "N", "H", "kv", "d", "dtype", "causal"]
    table = Table([*headers, "picked kernel", "kernel name"])
    for r in picked.itertuples(index=False):
        shape = [Cell(axis_value(getattr(r, axis))) for axis in POINT_AXES[:5]]
        causal = "yes" if r.causal == 1 else "no" if r.causal == 0 else "—"
        name = r.kernel if len(r.kernel) <= name_limit else r.kernel[: name_limit - 1] + "…"
        table.add([r.variant, *([r.device] if devices else []), *shape, r.dtype, causal, r.picked, name])
    return table


def dispatch_blocks(phase: str, rows: pd.DataFrame) -> list[Block]:
    """The table of one phase's kept rows; nothing when no torch-sdpa row recorded its kernels."""
    picked = picked_kernels(rows)
    if picked.empty:
        return []
    picked = picked.sort_values(["variant", "device", *POINT_AXES], kind="stable")
    tally = tally_points(picked["picked"], list(KINDS))
    devices = picked["device"].nunique() > 1
    shown = fair_head(picked, ["variant", "picked"], HTML_ROWS)
    short = fair_head(picked, ["variant", "picked"], MARKDOWN_ROWS)
    note = (
        f"What {DISPATCHER} (SDPA choosing its own kernel) ran at each point: {tally}. Picked kernel: "
        "from the names one call launched (GPU kernels; on a CPU the op SDPA dispatched to); kernel "
        "name: the first name that says so."
    )
    capped = shown_note(len(shown), len(picked), "points", "each variant's and kernel's first")
    brief = f"{DISPATCHER} picked {tally}."
    if len(short) < len(picked):
        brief += (
            f" {len(short)} of {len(picked)} points (each variant's and kernel's first); the report has all."
        )
    return [
        Block("h3", f"{phase}: the kernel {DISPATCHER} picked"),
        Block("p", f"{note} {capped}".strip(), markdown=False),
        Block("p", brief, html=False),
        Block("table", _table(shown, devices), markdown=False),
        Block("table", _table(short, devices, MARKDOWN_NAME), html=False),
    ]
