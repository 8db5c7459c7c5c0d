"""flash_attention with per-KV-head sliding windows and attention sinks (DuoAttention streaming
heads) and with Cog weighting, against the float64 reference: windows below, at and above the key
block size and Nk, sinks inside and past the first block, mixed per-head windows with GQA, Nq != Nk,
rows without keys, skipped key blocks, the log-sum-exp, fp16/bf16."""

import pytest
import torch

from kernels.flash_attention import block_config
from tests.helpers import assert_close
from tests.kernels.cases import (
    FP32_REL_TOL,
    GPU_LSE_REL_TOL,
    GPU_REL_TOL,
    HALF_REL_TOL,
    assert_lse_close,
    attention_inputs,
    attention_reference,
    run_flash_into_nan,
)
from workloads.reference import attention


def as_window(window, device):
    """An int stays an int; a list becomes the int32 [Hkv] tensor of per-KV-head windows."""
    return torch.tensor(window, dtype=torch.int32, device=device) if isinstance(window, list) else window


# (batch, Hq, Hkv, Nq, Nk, head_dim, window, sink). Interpreted tiles are 32 queries × 16 keys.
WINDOW_SHAPES = [
    pytest.param((1, 4, 2, 45, 45, 32, 5, 0), id="w5<block-sink0"),
    pytest.param((2, 2, 2, 50, 50, 32, 16, 3), id="w16=block-sink3-b2"),
    pytest.param((1, 4, 2, 45, 77, 32, 40, 20), id="w40>block-sink20>block"),
    pytest.param((1, 2, 2, 60, 60, 24, 20, 30), id="w20-sink30-ranges-overlap"),
    pytest.param((1, 2, 1, 37, 37, 16, 1, 1), id="w1-diagonal-only-sink1"),
    pytest.param((1, 2, 2, 37, 60, 32, 100, 4), id="w100>nk-is-plain-causal"),
    pytest.param((1, 2, 2, 20, 90, 24, 7, 0), id="w7-nq<nk"),
    pytest.param((1, 2, 1, 60, 25, 32, 6, 2), id="w6-nq>nk-rows-without-keys"),
    pytest.param((1, 2, 2, 30, 30, 16, 4, 1000), id="w4-sink>nk"),
    pytest.param((2, 8, 4, 45, 77, 40, [0, 7, 33, -1], 5), id="per-head-mixed-gqa2-b2"),
    pytest.param((1, 6, 2, 40, 70, 48, [2**31 - 1, 3], 17), id="per-head-int32max-gqa3"),
    pytest.param((1, 4, 1, 50, 50, 80, [10], 0), id="per-head-mqa4-d80"),
]


@pytest.mark.parametrize("shape", WINDOW_SHAPES)
def test_flash_attention_window_sink_fp32(shape, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, window, sink = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, dtype=torch.float32, device=device
    )
    kwargs = {"causal": True, "window": as_window(window, device), "sink": sink}
    out, lse = run_flash_into_nan(q, k, v, return_lse=True, **kwargs)
    ref_out, ref_lse = attention_reference(q, k, v, return_lse=True, **kwargs)
    assert_close(out, ref_out, rel_tol=FP32_REL_TOL)
    assert_lse_close(lse, ref_lse, rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("sink_offset", [0, 1, -1], ids=["sink0", "sink1", "sink=block-1"])
def test_flash_attention_window_at_every_block_offset(sink_offset, device):
    """One KV head per window size around one and two key blocks (and a retrieval head), so the
    window's edge falls at every kind of place inside a key block; the sink ends before, at or
    just inside the first block. Query tiles start at positions that are not block multiples."""
    block_m, block_n = block_config(16, torch.float32)[:2]
    windows = [1, 2, block_n - 1, block_n, block_n + 1, 2 * block_n - 1, 2 * block_n + 1, 0]
    sink = sink_offset % block_n
    n_q, n_k = block_m + 5, block_m + 2 * block_n + 3
    q, k, v = attention_inputs(
        1, 2 * len(windows), len(windows), n_q, n_k, 16, dtype=torch.float32, device=device
    )
    kwargs = {"causal": True, "window": as_window(windows, device), "sink": sink}
    out = run_flash_into_nan(q, k, v, **kwargs)
    assert_close(out, attention_reference(q, k, v, **kwargs), rel_tol=FP32_REL_TOL, name=f"sink={sink}")


@pytest.mark.parametrize("weighting", ["softmax", "cog"])
def test_flash_attention_window_skips_hidden_key_blocks(weighting, device):
    """One query tile at positions 4·BLOCK_N.. with a half-block window and a 4-key sink sees key
    blocks 0, 3 and 4 only: blocks 1 and 2 hold NaN and must never be read (a masked read would
    still turn the output NaN, since 0 · NaN is NaN)."""
    block_m, block_n = block_config(16, torch.float32)[:2]
    n_q, n_k = block_m, block_m + 4 * block_n
    q, k, v = attention_inputs(2, 4, 2, n_q, n_k, 16, dtype=torch.float32, device=device)
    kwargs = {"causal": True, "window": block_n // 2, "sink": 4, "weighting": weighting}
    expected = attention_reference(q, k, v, **kwargs)
    k[:, :, block_n : 3 * block_n] = float("nan")
    v[:, :, block_n : 3 * block_n] = float("nan")
    assert_close(run_flash_into_nan(q, k, v, **kwargs), expected, rel_tol=FP32_REL_TOL)


def test_flash_attention_window_tensor_is_read_through_its_stride(device):
    """Per-head windows taken as every other entry of a longer tensor (a streaming head, then a
    retrieval head): entry 1 of the view is 0, where the memory next to entry 0 holds a window 2."""
    q, k, v = attention_inputs(1, 4, 2, 40, 50, 16, dtype=torch.float32, device=device)
    window = torch.tensor([6, 2, 0, 2], dtype=torch.int32, device=device)[::2]
    assert not window.is_contiguous()
    kwargs = {"causal": True, "window": window, "sink": 3}
    assert_close(
        run_flash_into_nan(q, k, v, **kwargs), attention_reference(q, k, v, **kwargs), rel_tol=FP32_REL_TOL
    )


# (batch, Hq, Hkv, Nq, Nk, d_qk, d_v), keyword arguments for weighting="cog"
COG_CASES = [
    pytest.param((2, 2, 2, 37, 50, 32, 32), {}, id="mha-full-nq<nk-b2"),
    pytest.param((1, 4, 2, 37, 60, 48, 48), {"causal": True}, id="gqa2-causal"),
    pytest.param((1, 2, 1, 40, 12, 32, 32), {"causal": True}, id="mqa2-causal-rows-without-keys"),
    pytest.param(
        (1, 4, 2, 33, 33, 32, 32), {"causal": True, "scale": 1.0}, id="gqa2-causal-scale1-wide-scores"
    ),
    pytest.param((2, 4, 2, 50, 50, 24, 24), {"causal": True, "window": 16, "sink": 3}, id="w16-sink3-b2"),
    pytest.param(
        (1, 8, 4, 45, 77, 32, 24),
        {"causal": True, "window": [0, 7, 33, -1], "sink": 5},
        id="per-head-gqa2-dv24",
    ),
    pytest.param((1, 4, 4, 30, 40, 192, 128), {"causal": True}, id="mha-causal-mla-dqk192-dv128"),
]


@pytest.mark.parametrize("shape, kwargs", COG_CASES)
def test_flash_attention_cog_fp32(shape, kwargs, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim,
        head_dim_v=head_dim_v, dtype=torch.float32, device=device,
    )  # fmt: skip
    kwargs = {**kwargs, "weighting": "cog"}
    if "window" in kwargs:
        kwargs["window"] = as_window(kwargs["window"], device)
    out = run_flash_into_nan(q, k, v, **kwargs)
    assert_close(out, attention_reference(q, k, v, **kwargs), rel_tol=FP32_REL_TOL)


def test_flash_attention_cog_zero_score_weighs_nothing(device):
    """Cog weights a key by sign(s): a query of zeros scores 0 on every key and outputs exactly 0
    (softmax would average V)."""
    q, k, v = attention_inputs(1, 2, 1, 20, 30, 32, dtype=torch.float32, device=device)
    q[:, :, ::3] = 0.0
    out = run_flash_into_nan(q, k, v, causal=True, weighting="cog")
    assert torch.all(out[:, :, ::3] == 0)
    assert_close(out, attention_reference(q, k, v, causal=True, weighting="cog"), rel_tol=FP32_REL_TOL)


HALF_CASES = [
    pytest.param((1, 8, 4, 45, 77, 48), {"window": [0, 7, 33, -1], "sink": 5}, id="per-head-gqa2-softmax"),
    pytest.param((2, 4, 2, 50, 37, 32), {"window": 9, "sink": 3, "weighting": "cog"}, id="w9-cog-nq>nk-b2"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape, kwargs", HALF_CASES)
def test_flash_attention_window_cog_half_precision(shape, kwargs, dtype, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim = shape
    q, k, v = attention_inputs(batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, dtype=dtype, device=device)
    kwargs = {**kwargs, "causal": True, "window": as_window(kwargs["window"], device)}
    out = run_flash_into_nan(q, k, v, **kwargs)
    assert_close(out, attention_reference(q, k, v, **kwargs), rel_tol=HALF_REL_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_flash_attention_gpu_streaming_heads(dtype):
    """DuoAttention at serving size: 32 query heads over 8 KV heads, half of them streaming
    (sink 128 + window 256), 4k causal; output and lse against a float32 GPU reference."""
    q, k, v = attention_inputs(2, 32, 8, 4096, 4096, 128, dtype=dtype, device="cuda")
    window = torch.tensor([256, 0] * 4, dtype=torch.int32, device="cuda")
    kwargs = {"causal": True, "window": window, "sink": 128}
    out, lse = run_flash_into_nan(q, k, v, return_lse=True, **kwargs)
    ref_out, ref_lse = attention(q.float(), k.float(), v.float(), query_chunk=256, return_lse=True, **kwargs)
    assert_close(out, ref_out, rel_tol=GPU_REL_TOL[dtype])
    assert_lse_close(lse, ref_lse.cpu(), rel_tol=GPU_LSE_REL_TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("window", [None, 512], ids=["causal", "window512-sink4"])
def test_flash_attention_gpu_cog(window, dtype):
    """Cog weighting compiled at 2k causal, GQA 4, against a float32 GPU reference."""
    q, k, v = attention_inputs(2, 16, 4, 2048, 2048, 128, dtype=dtype, device="cuda")
    kwargs = {"causal": True, "window": window, "sink": 4, "weighting": "cog"}
    out = run_flash_into_nan(q, k, v, **kwargs)
    ref = attention(q.float(), k.float(), v.float(), query_chunk=256, **kwargs)
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])
