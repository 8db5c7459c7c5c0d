"""decode_attention against the float64 reference: ragged cache lengths (0, 1, L_max), GQA ratios,
explicit and default split counts, scale, strides, dtypes, sliding windows with attention sinks
(streaming heads), and input validation. MLA shapes (Dk != Dv, V a view of K) are in
test_decode_attention_mla.py."""

import pytest
import torch

from kernels import decode_attention
from kernels.decode_attention import default_num_splits
from tests.helpers import assert_close, random_tensor
from tests.kernels.invalid_inputs import replacing, with_kwargs
from workloads.reference import attention, visible_keys

FP32_REL_TOL = 1e-5
# Measured under the interpreter over every shape of both kernel test files in fp16 and bf16, 3 seeds
# and 1 or 3 splits: fp16 <= 2.9e-4, bf16 <= 5.6e-3.
# (The interpreter truncates fp32 -> bf16 where a GPU rounds to nearest, so bf16 reads high here.)
HALF_REL_TOL = {torch.float16: 5e-4, torch.bfloat16: 8e-3}
# Not yet measured on a GPU: DESIGN.md §4's typical bounds until a GPU session records real numbers.
GPU_REL_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def make_inputs(n_q_heads, n_kv_heads, max_len, head_dim, lengths, *, dtype, device, seed=0):
    """q [B, Hq, D], k_cache, v_cache [B, Hkv, L_max, D] standard normal, cache_seqlens int32 [B]."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    q = random_tensor(batch, n_q_heads, head_dim, dtype=dtype, device=device, generator=generator)
    k_cache = random_tensor(
        batch, n_kv_heads, max_len, head_dim, dtype=dtype, device=device, generator=generator
    )
    v_cache = random_tensor(
        batch, n_kv_heads, max_len, head_dim, dtype=dtype, device=device, generator=generator
    )
    cache_seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, cache_seqlens


def reference(q, k_cache, v_cache, cache_seqlens, **kwargs):
    """The float64 CPU reference: one query position per sequence, keys masked past its length."""
    q64, k64, v64 = (t.detach().cpu().double() for t in (q, k_cache, v_cache))
    return attention(q64[:, :, None], k64, v64, kv_lengths=cache_seqlens.cpu(), **kwargs)[:, :, 0]


def run_into_nan(q, k_cache, v_cache, cache_seqlens, out=None, **kwargs):
    """decode_attention writing into an output [B, Hq, Dv] pre-filled with NaN, so an unwritten row fails."""
    if out is None:
        shape = (*q.shape[:2], v_cache.shape[-1])
        out = torch.full(shape, float("nan"), dtype=q.dtype, device=q.device)
    result = decode_attention(q, k_cache, v_cache, cache_seqlens, out=out, **kwargs)
    assert result is out
    return out


# (Hq, Hkv, L_max, head_dim, cache_seqlens). Interpreted key blocks hold 16 keys.
FP32_SHAPES = [
    pytest.param((2, 2, 45, 32, [1, 45, 0, 17]), id="mha-ragged-len0-len1-lmax"),
    pytest.param((4, 2, 37, 64, [37, 5]), id="gqa2-lmax37"),
    pytest.param((8, 2, 50, 24, [50, 1, 33]), id="gqa4-d24"),
    pytest.param((16, 2, 29, 80, [29, 0]), id="gqa8-d80"),
    pytest.param((5, 1, 40, 48, [40, 12]), id="mqa5-d48"),
    pytest.param((32, 1, 23, 16, [7, 23]), id="mqa32"),
]
SPLITS = [
    pytest.param(None, id="splits-default"),
    pytest.param(1, id="splits1"),
    pytest.param(3, id="splits3"),
    pytest.param(9, id="splits9-more-than-blocks"),
]


@pytest.mark.parametrize("num_splits", SPLITS)
@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_decode_attention_fp32_matches_reference(shape, num_splits, device):
    n_q_heads, n_kv_heads, max_len, head_dim, lengths = shape
    q, k_cache, v_cache, seqlens = make_inputs(
        n_q_heads, n_kv_heads, max_len, head_dim, lengths, dtype=torch.float32, device=device
    )
    out = run_into_nan(q, k_cache, v_cache, seqlens, num_splits=num_splits)
    assert_close(out, reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_empty_sequence_is_zero(device):
    q, k_cache, v_cache, seqlens = make_inputs(4, 2, 20, 32, [0, 20, 0], dtype=torch.float32, device=device)
    out = run_into_nan(q, k_cache, v_cache, seqlens, num_splits=2)
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0)
    assert_close(out, reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_clamps_lengths_to_cache(device):
    """A length past L_max reads the whole cache (clamped in the kernel, no host sync)."""
    q, k_cache, v_cache, seqlens = make_inputs(4, 2, 20, 32, [25, 7], dtype=torch.float32, device=device)
    out = run_into_nan(q, k_cache, v_cache, seqlens, num_splits=2)
    clamped = seqlens.clamp(max=20)
    assert_close(out, reference(q, k_cache, v_cache, clamped), rel_tol=FP32_REL_TOL)


def test_decode_attention_custom_scale(device):
    q, k_cache, v_cache, seqlens = make_inputs(4, 2, 37, 48, [37, 20], dtype=torch.float32, device=device)
    out = run_into_nan(q, k_cache, v_cache, seqlens, scale=0.2, num_splits=2)
    assert_close(out, reference(q, k_cache, v_cache, seqlens, scale=0.2), rel_tol=FP32_REL_TOL)


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
    run_into_nan(q, k_cache, v_cache, seqlens, out=out, num_splits=3)
    assert_close(out, reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_allocates_output_when_not_given(device):
    q, k_cache, v_cache, seqlens = make_inputs(4, 1, 30, 32, [30, 3], dtype=torch.float16, device=device)
    out = decode_attention(q, k_cache, v_cache, seqlens)
    assert out.shape == q.shape and out.dtype == torch.float16 and out.device == q.device
    assert_close(out, reference(q, k_cache, v_cache, seqlens), rel_tol=HALF_REL_TOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_attention_half_precision(dtype, device):
    q, k_cache, v_cache, seqlens = make_inputs(8, 2, 45, 64, [1, 45, 30], dtype=dtype, device=device)
    out = run_into_nan(q, k_cache, v_cache, seqlens, num_splits=3)
    assert_close(out, reference(q, k_cache, v_cache, seqlens), rel_tol=HALF_REL_TOL[dtype])


def poison_invisible(k_cache, v_cache, cache_seqlens, window, sink):
    """Copies of the caches with NaN in every row no query may see (past a sequence's length, and
    between the sink and the window of a streaming head): reading one would make the output NaN."""
    batch, n_kv_heads, max_len = k_cache.shape[:3]
    rows = torch.zeros(1, dtype=torch.long, device=k_cache.device)
    visible = visible_keys(
        batch, n_kv_heads, rows, 1, max_len, causal=False, kv_lengths=cache_seqlens, window=window, sink=sink
    )[:, :, 0, 0, :, None]  # [B, Hkv, L_max, 1]
    return k_cache.masked_fill(~visible, float("nan")), v_cache.masked_fill(~visible, float("nan"))


def per_head_window(values, device):
    return torch.tensor(values, dtype=torch.int32, device=device)


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
    q, k_cache, v_cache, seqlens = make_inputs(
        n_q_heads, n_kv_heads, max_len, head_dim, lengths, dtype=torch.float32, device=device
    )
    if isinstance(window, list):
        window = per_head_window(window, device)
    k_poisoned, v_poisoned = poison_invisible(k_cache, v_cache, seqlens, window, sink)
    out = run_into_nan(q, k_poisoned, v_poisoned, seqlens, window=window, sink=sink, num_splits=num_splits)
    ref = reference(q, k_cache, v_cache, seqlens, window=window, sink=sink)
    assert_close(out, ref, rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_attention_streaming_half_precision(dtype, device):
    q, k_cache, v_cache, seqlens = make_inputs(8, 2, 45, 64, [45, 30, 4], dtype=dtype, device=device)
    window = per_head_window([10, 0], device)
    out = run_into_nan(q, k_cache, v_cache, seqlens, window=window, sink=3, num_splits=2)
    ref = reference(q, k_cache, v_cache, seqlens, window=window, sink=3)
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


def _valid(device, dtype=torch.float32):
    return make_inputs(4, 2, 8, 32, [8, 3], dtype=dtype, device=device)


def _replace(index, tensor_fn):
    """Valid inputs with q, k_cache, v_cache or cache_seqlens (index 0..3) replaced by tensor_fn(device)."""
    return replacing(_valid, index, tensor_fn)


def _with_kwargs(**kwargs):
    return with_kwargs(_valid, **kwargs)


INVALID = [
    pytest.param(
        _replace(0, lambda d: torch.randn(2, 4, 1, 32, device=d)), "q must have rank 3", id="q-rank4"
    ),
    pytest.param(
        _replace(1, lambda d: torch.randn(2, 2, 32, device=d)), "k_cache must have rank 4", id="k-cache-rank3"
    ),
    pytest.param(
        _replace(1, lambda d: torch.randn(3, 2, 8, 32, device=d)),
        "k_cache has batch 3 but q has 2",
        id="k-cache-batch",
    ),
    pytest.param(
        _replace(1, lambda d: torch.randn(2, 2, 8, 48, device=d)),
        "k_cache has head_dim 48 but q has 32",
        id="k-cache-head-dim",
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(2, 2, 9, 32, device=d)),
        "v_cache has L_max 9 but k_cache has 8",
        id="v-cache-lmax",
    ),
    pytest.param(
        _replace(0, lambda d: torch.randn(2, 3, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(
        _replace(3, lambda d: torch.tensor([8, 3], dtype=torch.int64, device=d)),
        "cache_seqlens has dtype torch.int64, expected torch.int32",
        id="seqlens-int64",
    ),
    pytest.param(
        _replace(3, lambda d: torch.tensor([8, 3, 1], dtype=torch.int32, device=d)),
        "cache_seqlens has batch 3 but q has 2",
        id="seqlens-batch",
    ),
    pytest.param(
        _replace(3, lambda d: torch.tensor([[8, 3]], dtype=torch.int32, device=d)),
        "cache_seqlens must have rank 1",
        id="seqlens-rank2",
    ),
    pytest.param(
        lambda d: (make_inputs(4, 2, 0, 32, [0, 0], dtype=torch.float32, device=d), {}),
        "k_cache has L_max 0",
        id="empty-cache",
    ),
    pytest.param(
        lambda d: (make_inputs(4, 2, 8, 600, [8, 3], dtype=torch.float32, device=d), {}),
        "q head_dim 600 is outside the supported 16..576",
        id="head-dim-600",
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(2, 2, 8, 32, device=d).bfloat16()),
        "v_cache has dtype torch.bfloat16 but q has torch.float32",
        id="mixed-dtypes",
    ),
    pytest.param(
        _replace(3, lambda d: torch.tensor([8, 3], dtype=torch.int32, device="meta")),
        "cache_seqlens is on meta but q is on",
        id="seqlens-device",
    ),
    pytest.param(_with_kwargs(num_splits=0), "num_splits must be an int >= 1", id="num-splits-0"),
    pytest.param(
        _with_kwargs(window=lambda d: per_head_window([4, 4, 4], d)),
        "window has heads 3 but k_cache has 2",
        id="window-heads",
    ),
    pytest.param(
        _with_kwargs(window=lambda d: per_head_window([[4, 4]], d)),
        "window must have rank 1",
        id="window-rank2",
    ),
    pytest.param(
        _with_kwargs(window=lambda d: torch.tensor([4, 4], device=d)),
        "window has dtype torch.int64, expected torch.int32",
        id="window-int64",
    ),
    pytest.param(
        _with_kwargs(window=lambda d: torch.tensor([4, 4], dtype=torch.int32, device="meta")),
        "window is on meta but q is on",
        id="window-device",
    ),
    pytest.param(
        _with_kwargs(window=4.0), "window must be None, an int or an int32 tensor", id="window-float"
    ),
    pytest.param(
        _with_kwargs(window=True), "window must be None, an int or an int32 tensor", id="window-bool"
    ),
    pytest.param(_with_kwargs(window=4, sink=-1), "sink must be an int >= 0, got -1", id="sink-negative"),
    pytest.param(_with_kwargs(window=4, sink=2.0), "sink must be an int >= 0, got 2.0", id="sink-float"),
    pytest.param(
        _with_kwargs(out=lambda d: torch.empty(2, 4, 32, device=d).half()), "out has dtype", id="out-dtype"
    ),
]


@pytest.mark.parametrize("build, message", INVALID)
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
    q, k_cache, v_cache, seqlens = make_inputs(32, 8, 8192, 128, lengths, dtype=dtype, device="cuda")
    out = run_into_nan(q, k_cache, v_cache, seqlens, num_splits=num_splits)
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
    q, k_cache, v_cache, seqlens = make_inputs(32, 8, 8192, 128, lengths, dtype=dtype, device="cuda")
    window = per_head_window([256, 0, 256, 0, 256, -1, 256, 0], "cuda")
    k_poisoned, v_poisoned = poison_invisible(k_cache, v_cache, seqlens, window, 128)
    out = run_into_nan(q, k_poisoned, v_poisoned, seqlens, window=window, sink=128, num_splits=num_splits)
    ref = attention(
        q[:, :, None].float(), k_cache.float(), v_cache.float(), kv_lengths=seqlens, window=window, sink=128
    )[:, :, 0]
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])
