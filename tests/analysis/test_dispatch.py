"""The kernel SDPA's dispatcher picked (analysis.dispatch): names classified, one table per phase."""

import numpy as np
import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.dispatch import classify_kernels, dispatch_blocks, kernel_names, picked_kernels
from analysis.report import build_report
from analysis.rows import load_results
from analysis.store import ResultStore
from tests.analysis.conftest import (
    COPY_KERNEL,
    CUDNN_KERNEL,
    EFFICIENT_KERNEL,
    FLASH_KERNEL,
    MATH_KERNELS,
    heads_rows,
    vendor_rows,
)

CPU_SDPA = "aten::scaled_dot_product_attention"
SOFTMAX = MATH_KERNELS[1]


@pytest.mark.parametrize(
    "names, expected",
    [
        pytest.param([FLASH_KERNEL], ("flash", FLASH_KERNEL), id="gpu-flash"),
        pytest.param(
            [
                COPY_KERNEL,
                "void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<64>>(Flash_fwd_params)",
            ],
            (
                "flash",
                "void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<64>>(Flash_fwd_params)",
            ),
            id="gpu-flash-split-kv-after-a-copy",
        ),
        pytest.param([EFFICIENT_KERNEL], ("efficient", EFFICIENT_KERNEL), id="gpu-efficient"),
        pytest.param(
            ["fmha_cutlassB_f16_aligned_64x64_k64_sm80(PyTorchMemEffAttention::AttentionBackwardKernel)"],
            (
                "efficient",
                "fmha_cutlassB_f16_aligned_64x64_k64_sm80(PyTorchMemEffAttention::AttentionBackwardKernel)",
            ),
            id="gpu-efficient-backward",
        ),
        pytest.param([CUDNN_KERNEL], ("cudnn", CUDNN_KERNEL), id="gpu-cudnn-flash-fprop-is-cudnn"),
        pytest.param([COPY_KERNEL, *MATH_KERNELS], ("math", SOFTMAX), id="gpu-math-gemm-and-softmax"),
        pytest.param([SOFTMAX, FLASH_KERNEL], ("flash", FLASH_KERNEL), id="a-routers-softmax-before-flash"),
        pytest.param(
            [CPU_SDPA, "aten::_scaled_dot_product_flash_attention_for_cpu"],
            ("flash", "aten::_scaled_dot_product_flash_attention_for_cpu"),
            id="cpu-flash",
        ),
        pytest.param(
            ["aten::linear", CPU_SDPA, "aten::_scaled_dot_product_attention_math"],
            ("math", "aten::_scaled_dot_product_attention_math"),
            id="cpu-math",
        ),
        pytest.param(
            [CPU_SDPA, "aten::_scaled_dot_product_efficient_attention"],
            ("efficient", "aten::_scaled_dot_product_efficient_attention"),
            id="op-efficient",
        ),
        pytest.param(
            [CPU_SDPA, "aten::_scaled_dot_product_cudnn_attention"],
            ("cudnn", "aten::_scaled_dot_product_cudnn_attention"),
            id="op-cudnn",
        ),
        pytest.param(
            [CPU_SDPA, "aten::_scaled_dot_product_fused_attention_overrideable"],
            ("other", CPU_SDPA),
            id="other",
        ),
        pytest.param([], ("", ""), id="nothing-recorded"),
    ],
)
def test_classify_kernels(names, expected):
    assert classify_kernels(names) == expected


@pytest.mark.parametrize(
    "value, names",
    [
        pytest.param(["a", "b"], ["a", "b"], id="list"),
        pytest.param(np.array(["a", "b"], dtype=object), ["a", "b"], id="array-from-parquet"),
        pytest.param(None, [], id="none"),
        pytest.param(float("nan"), [], id="nan"),
    ],
)
def test_kernel_names(value, names):
    assert kernel_names(value) == names


@pytest.fixture(scope="module")
def vendor():
    return load_results(pd.DataFrame(vendor_rows()))


@pytest.mark.parametrize(
    "phase, picked",
    [
        pytest.param(
            "prefill",
            {("mha", 128): "flash", ("mha", 384): "flash", ("mha", 1000): "cudnn", ("gqa", 1000): "cudnn"},
            id="prefill",
        ),
        pytest.param("decode", {("mha", 128): "efficient", ("gqa", 384): "math"}, id="decode"),
    ],
)
def test_only_torch_sdpa_rows_with_kernels_are_classified(vendor, phase, picked):
    rows = picked_kernels(vendor[vendor["phase"].eq(phase)])
    assert rows["backend"].eq("torch-sdpa").all() and len(rows) == 6  # 2 variants × 3 lengths
    got = rows.set_index(["variant", "seq_len"])["picked"]
    assert {key: got[key] for key in picked} == picked


def test_dispatch_table_per_phase(vendor):
    blocks = dispatch_blocks("decode", vendor[vendor["phase"].eq("decode")])
    assert blocks[0].content == "decode: the kernel torch-sdpa picked"
    assert "torch-sdpa picked efficient at 3 points, math at 3." in [b.content for b in blocks]
    table = next(b.content for b in blocks if b.kind == "table")
    assert table.headers[-2:] == ["picked kernel", "kernel name"] and "device" not in table.headers
    assert [row[-2:] for row in table.rows] == [["math", SOFTMAX]] * 3 + [["efficient", EFFICIENT_KERNEL]] * 3


def test_no_table_without_recorded_kernels():
    assert dispatch_blocks("prefill", load_results(pd.DataFrame(heads_rows()))) == []


def test_report_reads_kernels_back_from_the_store(tmp_path):
    store = ResultStore(tmp_path / "results", "vendor", "run-vendor")
    store.append(vendor_rows())
    store.finalize()
    markdown = build_report(tmp_path / "results" / "vendor", tmp_path / "report").markdown.read_text()
    assert markdown.count("the kernel torch-sdpa picked") == 2
    assert (
        "| mha | 2 | 1000 | 8 | 8 | 64 | float16 | yes | cudnn | cudnn_generated_fort_native_sdpa" in markdown
    )


def test_summary_clips_long_names_and_names_devices_when_several(vendor):
    long_name = "void pytorch_flash::flash_fwd_kernel<" + "Flash_fwd_kernel_traits<64>, " * 20 + ">"
    rows = vendor[vendor["phase"].eq("prefill")].copy()
    sdpa = rows.index[rows["backend"].eq("torch-sdpa")]
    rows.loc[sdpa[0], "device"] = "NVIDIA A100-SXM4-80GB"
    rows.loc[sdpa[0], "kernels"] = [[long_name]]
    html_table, markdown_table = [b.content for b in dispatch_blocks("prefill", rows) if b.kind == "table"]
    assert "device" in html_table.headers and "device" in markdown_table.headers
    names = {
        table: [row[-1] for row in t.rows] for table, t in (("html", html_table), ("md", markdown_table))
    }
    assert long_name in names["html"] and long_name not in names["md"]
    assert max(len(n) for n in names["md"]) == 100 and any(n.endswith("…") for n in names["md"])
