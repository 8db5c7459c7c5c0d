"""decode_attention against the float64 reference: ragged cache lengths (0, 1, L_max), GQA ratios,
explicit and default split counts, scale, strides, dtypes, sliding windows with attention sinks
(streaming heads), and input validation. MLA shapes (Dk != Dv, V a view of K) are in
test_decode_attention_mla.py."""

import pytest
import torch

from kernels import decode_attention
from kernels.decode_attention import default_num_splits
from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import (
    DECODE_SPLITS,
    FP32_REL_TOL,
    GPU_REL_TOL,
    HALF_REL_TOL,
    decode_inputs,
    decode_reference,
    per_head_window,
    poison_invisible,
    run_decode_into_nan,
)
from tests.kernels.invalid_inputs import DECODE_INVALID
from workloads.reference import attention

# (Hq, Hkv, L_max, head_dim, cache_seqlens). Interpreted key blocks hold 16 keys.
FP32_SHAPES = [
    pytest.param((2, 2, 45, 32, [1, 45, 0, 17]), id="mha-ragged-len0-len1-lmax"),
    pytest.param((4, 2, 37, 64, [37, 5]), id="gqa2-lmax37"),
    pytest.param((8, 2, 50, 24, [50, 1, 33]), id="gqa4-d24"),
    pytest.param((16, 2, 29, 80, [29, 0]), id="gqa8-d80"),
    pytest.param((5, 1, 40, 48, [40, 12]), id="mqa5-d48"),
    pytest.param((32, 1, 23, 16, [7, 23]), id="mqa32"),
]


@pytest.mark.parametrize("num_splits", DECODE_SPLITS)
@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_decode_attention_fp32_matches_reference(shape, num_splits, device):
    n_q_heads, n_kv_heads, max_len, head_dim, lengths = shape
    q, k_cache, v_cache, seqlens = decode_inputs(
        n_q_heads, n_kv_heads, max_len, head_dim, lengths, dtype=torch.float32, device=device
    )
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=num_splits)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_empty_sequence_is_zero(device):
    q, k_cache, v_cache, seqlens = decode_inputs(4, 2, 20, 32, [0, 20, 0], dtype=torch.float32, device=device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=2)
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_clamps_lengths_to_cache(device):
    """A length past L_max reads the whole cache (clamped in the kernel, no host sync)."""
    q, k_cache, v_cache, seqlens = decode_inputs(4, 2, 20, 32, [25, 7], dtype=torch.float32, device=device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=2)
    clamped = seqlens.clamp(max=20)
    assert_close(out, decode_reference(q, k_cache, v_cache, clamped), rel_tol=FP32_REL_TOL)


def test_decode_attention_custom_scale(device):
    q, k_cache, v_cache, seqlens = decode_inputs(4, 2, 37, 48, [37, 20], dtype=torch.float32, device=device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, scale=0.2, num_splits=2)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens, scale=0.2), rel_tol=FP32_REL_TOL)


def test_decode_attention_non_contiguous_inputs_and_output(device):
    """Caches stored [B, L_max, Hkv, D] and viewed transposed; q and out as slices of wider rows."""
    batch, n_q_heads, n_kv_heads, max_len, head_dim = 3, 8, 2, 37, 32
    generator = torch.Generator().manual_seed(1)
    q = random_tensor(batch, n_q_heads, 2 * head_dim, device=device, generator=generator)[..., head_dim:]
    k_cache = random_tensor(
        batch, max_len, n_kv_heads, head_dim, device=device, generator=generator
    ).transpose(1, 2)
    v_cache = random_tensor(
        batch, max_len, n_kv_heads, head_dim, device=device, generator=generator
    ).transpose(1, 2)
    seqlens = torch.tensor([37, 0, 9, 0, 1, 0], dtype=torch.int32, device=device)[::2]
    out = torch.full((batch, n_q_heads, 2 * head_dim), float("nan"), device=device)[..., :head_dim]
    assert not any(t.is_contiguous() for t in (q, k_cache, v_cache, seqlens, out))
    run_decode_into_nan(q, k_cache, v_cache, seqlens, out=out, num_splits=3)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_allocates_output_when_not_given(device):
    q, k_cache, v_cache, seqlens = decode_inputs(4, 1, 30, 32, [30, 3], dtype=torch.float16, device=device)
    out = decode_attention(q, k_cache, v_cache, seqlens)
    assert out.shape == q.shape and out.dtype == torch.float16 and out.device == q.device
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=HALF_REL_TOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_attention_half_precision(dtype, device):
    q, k_cache, v_cache, seqlens = decode_inputs(8, 2, 45, 64, [1, 45, 30], dtype=dtype, device=device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=3)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=HALF_REL_TOL[dtype])


# (Hq, Hkv, L_max, head_dim, cache_seqlens, window, sink); window None | int | per-KV-head list.
# Interpreted key blocks hold 16 keys, so windows of 5 and 20 start and end inside blocks.
STREAMING_SHAPES = [
    pytest.param((4, 2, 45, 32, [45, 0, 1, 17, 3], 5, 0), id="window5-below-block-no-sink"),
    pytest.param((4, 2, 50, 24, [50, 33, 2], 20, 3), id="window20-sink3"),
    pytest.param((8, 2, 41, 48, [41, 40, 1], 100, 4), id="window-beyond-cache"),
    pytest.param((2, 1, 47, 32, [47, 30, 12], 7, 20), id="sink20-over-window-start"),
    pytest.param((8, 4, 50, 40, [50, 23, 0, 1], [0, 7, 33, -1], 2), id="per-head-retrieval-and-streaming"),
    pytest.param((16, 2, 45, 32, [45, 38], [9, 16], 17), id="per-head-windows-gqa8-sink17"),
    pytest.param((4, 2, 30, 32, [30, 11], None, 6), id="sink-without-window-is-no-op"),
]


@pytest.mark.parametrize("num_splits", [None, 1, 3], ids=["splits-default", "splits1", "splits3"])
@pytest.mark.parametrize("shape", STREAMING_SHAPES)
def test_decode_attention_streaming_heads_match_reference(shape, num_splits, device):
    """Sliding window + sink per KV head; rows nobody sees hold NaN, so reading one fails."""
    n_q_heads, n_kv_heads, max_len, head_dim, lengths, window, sink = shape
    q, k_cache, v_cache, seqlens = decode_inputs(
        n_q_heads, n_kv_heads, max_len, head_dim, lengths, dtype=torch.float32, device=device
    )
    if isinstance(window, list):
        window = per_head_window(window, device)
    k_poisoned, v_poisoned = poison_invisible(k_cache, v_cache, seqlens, window, sink)
    out = run_decode_into_nan(
        q, k_poisoned, v_poisoned, seqlens, window=window, sink=sink, num_splits=num_splits
    )
    ref = decode_reference(q, k_cache, v_cache, seqlens, window=window, sink=sink)
    assert_close(out, ref, rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_attention_streaming_half_precision(dtype, device):
    q, k_cache, v_cache, seqlens = decode_inputs(8, 2, 45, 64, [45, 30, 4], dtype=dtype, device=device)
    window = per_head_window([10, 0], device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, window=window, sink=3, num_splits=2)
    ref = decode_reference(q, k_cache, v_cache, seqlens, window=window, sink=3)
    assert_close(out, ref, rel_tol=HALF_REL_TOL[dtype])


@pytest.mark.parametrize(
    "batch_kv_heads, max_len, expected",
    [
        pytest.param(8, 8192, 32, id="few-heads-long-cache"),
        pytest.param(132, 8192, 1, id="grid-already-full"),
        pytest.param(8, 128, 1, id="short-cache"),
        pytest.param(1, 1 << 20, 64, id="capped"),
    ],
)
def test_default_num_splits_fills_the_device(batch_kv_heads, max_len, expected):
    """About two stage-1 programs per SM (132 SMs here), at least 4 key blocks of 64 per split."""
    assert default_num_splits(batch_kv_heads, max_len, block_n=64, num_sms=132) == expected


@pytest.mark.parametrize("build, message", DECODE_INVALID)
def test_decode_attention_rejects_invalid_input(build, message, device):
    (q, k_cache, v_cache, seqlens), kwargs = build(device)
    with pytest.raises(ValueError, match=message):
        decode_attention(q, k_cache, v_cache, seqlens, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("num_splits", [None, 1, 7], ids=["splits-default", "splits1", "splits7"])
def test_decode_attention_gpu_realistic(num_splits, dtype):
    """Compiled kernel on an 8k ragged cache (H=32, Hkv=8, D=128) against a float32 GPU reference."""
    generator = torch.Generator().manual_seed(0)
    lengths = [1, 8192, 4097, 100] + torch.randint(1, 8193, (4,), generator=generator).tolist()
    q, k_cache, v_cache, seqlens = decode_inputs(32, 8, 8192, 128, lengths, dtype=dtype, device="cuda")
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=num_splits)
    ref = attention(q[:, :, None].float(), k_cache.float(), v_cache.float(), kv_lengths=seqlens)[:, :, 0]
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("num_splits", [None, 1, 5], ids=["splits-default", "splits1", "splits5"])
def test_decode_attention_gpu_streaming_heads(num_splits, dtype):
    """DuoAttention-like cache (8k, H=32, Hkv=8, D=128): half the KV heads stream with 128 sink +
    256 recent keys, half retrieve; invisible rows hold NaN. Against a float32 GPU reference."""
    generator = torch.Generator().manual_seed(0)
    lengths = [1, 8192, 4097, 300] + torch.randint(1, 8193, (4,), generator=generator).tolist()
    q, k_cache, v_cache, seqlens = decode_inputs(32, 8, 8192, 128, lengths, dtype=dtype, device="cuda")
    window = per_head_window([256, 0, 256, 0, 256, -1, 256, 0], "cuda")
    k_poisoned, v_poisoned = poison_invisible(k_cache, v_cache, seqlens, window, 128)
    out = run_decode_into_nan(
        q, k_poisoned, v_poisoned, seqlens, window=window, sink=128, num_splits=num_splits
    )
    ref = attention(
        q[:, :, None].float(), k_cache.float(), v_cache.float(), kv_lengths=seqlens, window=window, sink=128
    )[:, :, 0]
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])
