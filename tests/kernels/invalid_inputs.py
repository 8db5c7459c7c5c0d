"""Every kernel's malformed calls, one table per public function, each used by that kernel's test
(`test_<kernel>_rejects_invalid_input`): pytest.param(build, message, id=...), where build(device)
returns (positional tensors, keyword arguments) and `message` is a regex the ValueError must match.

Each table starts from a well-formed call (`_<kernel>_valid(device)`), of which one tensor is swapped
out (`replacing`) or to which keywords are added (`with_kwargs`).
"""

from collections.abc import Callable

import pytest
import torch

from tests.kernels.cases import (
    attention_inputs,
    backward_inputs,
    decode_inputs,
    mla_decode_inputs,
    per_head_window,
    random_gates,
)


def replacing(valid: Callable, index: int, tensor_fn: Callable) -> Callable:
    """Valid inputs with the tensor at `index` replaced by tensor_fn(device)."""

    def build(device):
        tensors = list(valid(device))
        tensors[index] = tensor_fn(device)
        return tuple(tensors), {}

    return build


def with_kwargs(valid: Callable, **kwargs) -> Callable:
    """Valid inputs plus keyword arguments; a callable value is called with the device."""

    def build(device):
        return valid(device), {
            key: value(device) if callable(value) else value for key, value in kwargs.items()
        }

    return build


# flash_attention(q, k, v, **kwargs)


def _flash_valid(device, dtype=torch.float32):
    return attention_inputs(1, 4, 2, 8, 8, 32, dtype=dtype, device=device)


def _flash_replace(index, tensor_fn):
    """Valid inputs with q, k or v (index 0, 1, 2) replaced by tensor_fn(device)."""
    return replacing(_flash_valid, index, tensor_fn)


def _flash_with_kwargs(**kwargs):
    return with_kwargs(_flash_valid, **kwargs)


FLASH_INVALID = [
    pytest.param(
        _flash_replace(0, lambda d: torch.randn(4, 8, 32, device=d)), "q must have rank 4", id="q-rank3"
    ),
    pytest.param(
        _flash_replace(1, lambda d: torch.randn(2, 2, 8, 32, device=d)),
        "k has batch 2 but q has 1",
        id="k-batch",
    ),
    pytest.param(
        _flash_replace(1, lambda d: torch.randn(1, 2, 8, 64, device=d)),
        "k has head_dim 64 but q has 32",
        id="k-head-dim",
    ),
    pytest.param(
        _flash_replace(2, lambda d: torch.randn(1, 2, 9, 32, device=d)),
        "v has seq_len 9 but k has 8",
        id="v-seq-len",
    ),
    pytest.param(
        _flash_replace(2, lambda d: torch.randn(1, 1, 8, 32, device=d)),
        "v has heads 1 but k has 2",
        id="v-heads",
    ),
    pytest.param(
        _flash_replace(0, lambda d: torch.randn(1, 3, 8, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(
        _flash_replace(0, lambda d: torch.randn(1, 4, 0, 32, device=d)), "q has seq_len 0", id="empty-q"
    ),
    pytest.param(
        lambda d: (attention_inputs(1, 2, 2, 8, 0, 32, dtype=torch.float32, device=d), {}),
        "k has seq_len 0",
        id="empty-k",
    ),
    pytest.param(
        lambda d: (attention_inputs(1, 2, 2, 8, 8, 8, dtype=torch.float32, device=d), {}),
        "head_dim 8 is outside",
        id="head-dim-8",
    ),
    pytest.param(
        lambda d: (attention_inputs(1, 2, 2, 8, 8, 264, dtype=torch.float32, device=d), {}),
        "head_dim 264 is outside",
        id="head-dim-264",
    ),
    pytest.param(
        lambda d: (_flash_valid(d, torch.float64), {}),
        "q has dtype torch.float64, expected one of",
        id="float64",
    ),
    pytest.param(
        _flash_replace(1, lambda d: torch.randn(1, 2, 8, 32, device=d).half()),
        "k has dtype torch.float16 but q has torch.float32",
        id="mixed-dtypes",
    ),
    pytest.param(
        _flash_replace(2, lambda d: torch.randn(1, 2, 8, 32, device="meta")),
        "v is on meta but q is on",
        id="mixed-devices",
    ),
    pytest.param(lambda d: (_flash_valid("meta"), {}), "tensors are on meta", id="unsupported-device"),
    pytest.param(
        _flash_with_kwargs(out=lambda d: torch.empty(1, 4, 8, 16, device=d)), "out has shape", id="out-shape"
    ),
    pytest.param(
        _flash_with_kwargs(out=lambda d: torch.empty(1, 4, 8, 32, device=d).half()),
        "out has dtype",
        id="out-dtype",
    ),
    pytest.param(_flash_with_kwargs(scale=float("nan")), "scale must be a finite float", id="scale-nan"),
    pytest.param(
        _flash_replace(2, lambda d: torch.randn(1, 2, 8, 8, device=d)), "v has head_dim 8, outside", id="dv-8"
    ),
    pytest.param(
        _flash_replace(2, lambda d: torch.randn(1, 2, 8, 264, device=d)),
        "v has head_dim 264, outside",
        id="dv-264",
    ),
    pytest.param(
        lambda d: (
            attention_inputs(1, 2, 2, 8, 8, 32, head_dim_v=48, dtype=torch.float32, device=d),
            {"out": torch.empty(1, 2, 8, 32, device=d)},
        ),
        r"out has shape \(1, 2, 8, 32\), expected \(1, 2, 8, 48\)",
        id="out-shape-not-dv",
    ),
    pytest.param(_flash_with_kwargs(window=4), "window requires causal=True", id="window-without-causal"),
    pytest.param(
        _flash_with_kwargs(causal=True, window=lambda d: torch.full((3,), 4, dtype=torch.int32, device=d)),
        "window has heads 3 but k has 2",
        id="window-shape",
    ),
    pytest.param(
        _flash_with_kwargs(causal=True, window=lambda d: torch.full((2,), 4, dtype=torch.int64, device=d)),
        "window has dtype torch.int64, expected torch.int32",
        id="window-int64",
    ),
    pytest.param(
        _flash_with_kwargs(
            causal=True, window=lambda d: torch.full((2,), 4, dtype=torch.int32, device="meta")
        ),
        "window is on meta but q is on",
        id="window-device",
    ),
    pytest.param(
        _flash_with_kwargs(causal=True, window=4.0),
        "window must be None, an int or an int32 tensor",
        id="window-float",
    ),
    pytest.param(
        _flash_with_kwargs(causal=True, window=4, sink=-1), "sink must be an int >= 0", id="sink-negative"
    ),
    pytest.param(
        _flash_with_kwargs(causal=True, window=lambda d: torch.full((2, 1), 4, dtype=torch.int32, device=d)),
        "window must have rank 1",
        id="window-rank2",
    ),
    pytest.param(
        _flash_with_kwargs(causal=True, window=True),
        "window must be None, an int or an int32 tensor",
        id="window-bool",
    ),
    pytest.param(
        _flash_with_kwargs(weighting="relu"), "weighting must be one of softmax, cog", id="weighting-relu"
    ),
    pytest.param(
        _flash_with_kwargs(weighting="cog", return_lse=True),
        "return_lse needs weighting='softmax'",
        id="lse-with-cog",
    ),
]


# flash_attention_backward(grad_out, q, k, v, out, lse, **kwargs)


def _backward_valid(device, dtype=torch.float32):
    """(grad_out, q, k, v, out, lse) for Hq = 4, Hkv = 2, Nq = Nk = 8, Dqk = 32, Dv = 16."""
    q, k, v, grad_out = backward_inputs(1, 4, 2, 8, 8, 32, 16, dtype=dtype, device=device)
    out = torch.zeros_like(grad_out)
    lse = torch.zeros(1, 4, 8, device=device)
    return grad_out, q, k, v, out, lse


def _backward_replace(index, tensor_fn):
    """Valid inputs with grad_out, q, k, v, out or lse (index 0..5) replaced by tensor_fn(device)."""
    return replacing(_backward_valid, index, tensor_fn)


def _backward_with_kwargs(**kwargs):
    return with_kwargs(_backward_valid, **kwargs)


BACKWARD_INVALID = [
    pytest.param(
        _backward_replace(1, lambda d: torch.randn(4, 8, 32, device=d)), "q must have rank 4", id="q-rank3"
    ),
    pytest.param(
        _backward_replace(2, lambda d: torch.randn(1, 2, 8, 16, device=d)),
        "k has head_dim 16 but q has 32",
        id="k-head-dim",
    ),
    pytest.param(
        _backward_replace(3, lambda d: torch.randn(1, 2, 9, 16, device=d)),
        "v has seq_len 9 but k has 8",
        id="v-seq-len",
    ),
    pytest.param(
        _backward_replace(1, lambda d: torch.randn(1, 3, 8, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(
        _backward_replace(3, lambda d: torch.randn(1, 2, 8, 8, device=d)),
        "v has head_dim 8, outside",
        id="dv-too-small",
    ),
    pytest.param(
        _backward_replace(4, lambda d: torch.randn(1, 4, 8, 32, device=d)),
        r"out has shape \(1, 4, 8, 32\), expected \(1, 4, 8, 16\)",
        id="out-head-dim-not-dv",
    ),
    pytest.param(
        _backward_replace(0, lambda d: torch.randn(1, 4, 7, 16, device=d)),
        "grad_out has shape",
        id="grad-out-seq-len",
    ),
    pytest.param(
        _backward_replace(5, lambda d: torch.zeros(1, 4, 8, 1, device=d)),
        "lse must have rank 3",
        id="lse-rank",
    ),
    pytest.param(
        _backward_replace(5, lambda d: torch.zeros(1, 2, 8, device=d)), "lse has shape", id="lse-heads"
    ),
    pytest.param(
        _backward_replace(5, lambda d: torch.zeros(1, 4, 8, device=d, dtype=torch.float64)),
        "lse has dtype torch.float64, expected torch.float32",
        id="lse-float64",
    ),
    pytest.param(
        _backward_replace(0, lambda d: torch.randn(1, 4, 8, 16, device=d).half()),
        "grad_out has dtype torch.float16 but q has torch.float32",
        id="grad-out-dtype",
    ),
    pytest.param(
        _backward_replace(4, lambda d: torch.randn(1, 4, 8, 16, device="meta")),
        "out is on meta but q is on",
        id="out-device",
    ),
    pytest.param(
        lambda d: (_backward_valid(d, torch.float64), {}),
        "q has dtype torch.float64, expected one of",
        id="float64",
    ),
    pytest.param(_backward_with_kwargs(scale=float("inf")), "scale must be a finite float", id="scale-inf"),
    pytest.param(
        _backward_with_kwargs(dk=lambda d: torch.empty(1, 2, 8, 16, device=d)),
        "dk has shape",
        id="dk-buffer-shape",
    ),
    pytest.param(
        _backward_with_kwargs(dv=lambda d: torch.empty(1, 2, 8, 16, device=d).half()),
        "dv has dtype torch.float16 but q has torch.float32",
        id="dv-buffer-dtype",
    ),
]


# decode_attention(q, k_cache, v_cache, cache_seqlens, **kwargs)


def _decode_valid(device, dtype=torch.float32):
    return decode_inputs(4, 2, 8, 32, [8, 3], dtype=dtype, device=device)


def _decode_replace(index, tensor_fn):
    """Valid inputs with q, k_cache, v_cache or cache_seqlens (index 0..3) replaced by tensor_fn(device)."""
    return replacing(_decode_valid, index, tensor_fn)


def _decode_with_kwargs(**kwargs):
    return with_kwargs(_decode_valid, **kwargs)


DECODE_INVALID = [
    pytest.param(
        _decode_replace(0, lambda d: torch.randn(2, 4, 1, 32, device=d)), "q must have rank 3", id="q-rank4"
    ),
    pytest.param(
        _decode_replace(1, lambda d: torch.randn(2, 2, 32, device=d)),
        "k_cache must have rank 4",
        id="k-cache-rank3",
    ),
    pytest.param(
        _decode_replace(1, lambda d: torch.randn(3, 2, 8, 32, device=d)),
        "k_cache has batch 3 but q has 2",
        id="k-cache-batch",
    ),
    pytest.param(
        _decode_replace(1, lambda d: torch.randn(2, 2, 8, 48, device=d)),
        "k_cache has head_dim 48 but q has 32",
        id="k-cache-head-dim",
    ),
    pytest.param(
        _decode_replace(2, lambda d: torch.randn(2, 2, 9, 32, device=d)),
        "v_cache has L_max 9 but k_cache has 8",
        id="v-cache-lmax",
    ),
    pytest.param(
        _decode_replace(0, lambda d: torch.randn(2, 3, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(
        _decode_replace(3, lambda d: torch.tensor([8, 3], dtype=torch.int64, device=d)),
        "cache_seqlens has dtype torch.int64, expected torch.int32",
        id="seqlens-int64",
    ),
    pytest.param(
        _decode_replace(3, lambda d: torch.tensor([8, 3, 1], dtype=torch.int32, device=d)),
        "cache_seqlens has batch 3 but q has 2",
        id="seqlens-batch",
    ),
    pytest.param(
        _decode_replace(3, lambda d: torch.tensor([[8, 3]], dtype=torch.int32, device=d)),
        "cache_seqlens must have rank 1",
        id="seqlens-rank2",
    ),
    pytest.param(
        lambda d: (decode_inputs(4, 2, 0, 32, [0, 0], dtype=torch.float32, device=d), {}),
        "k_cache has L_max 0",
        id="empty-cache",
    ),
    pytest.param(
        lambda d: (decode_inputs(4, 2, 8, 600, [8, 3], dtype=torch.float32, device=d), {}),
        "q head_dim 600 is outside the supported 16..576",
        id="head-dim-600",
    ),
    pytest.param(
        _decode_replace(2, lambda d: torch.randn(2, 2, 8, 32, device=d).bfloat16()),
        "v_cache has dtype torch.bfloat16 but q has torch.float32",
        id="mixed-dtypes",
    ),
    pytest.param(
        _decode_replace(3, lambda d: torch.tensor([8, 3], dtype=torch.int32, device="meta")),
        "cache_seqlens is on meta but q is on",
        id="seqlens-device",
    ),
    pytest.param(_decode_with_kwargs(num_splits=0), "num_splits must be an int >= 1", id="num-splits-0"),
    pytest.param(
        _decode_with_kwargs(window=lambda d: per_head_window([4, 4, 4], d)),
        "window has heads 3 but k_cache has 2",
        id="window-heads",
    ),
    pytest.param(
        _decode_with_kwargs(window=lambda d: per_head_window([[4, 4]], d)),
        "window must have rank 1",
        id="window-rank2",
    ),
    pytest.param(
        _decode_with_kwargs(window=lambda d: torch.tensor([4, 4], device=d)),
        "window has dtype torch.int64, expected torch.int32",
        id="window-int64",
    ),
    pytest.param(
        _decode_with_kwargs(window=lambda d: torch.tensor([4, 4], dtype=torch.int32, device="meta")),
        "window is on meta but q is on",
        id="window-device",
    ),
    pytest.param(
        _decode_with_kwargs(window=4.0), "window must be None, an int or an int32 tensor", id="window-float"
    ),
    pytest.param(
        _decode_with_kwargs(window=True), "window must be None, an int or an int32 tensor", id="window-bool"
    ),
    pytest.param(
        _decode_with_kwargs(window=4, sink=-1), "sink must be an int >= 0, got -1", id="sink-negative"
    ),
    pytest.param(
        _decode_with_kwargs(window=4, sink=2.0), "sink must be an int >= 0, got 2.0", id="sink-float"
    ),
    pytest.param(
        _decode_with_kwargs(out=lambda d: torch.empty(2, 4, 32, device=d).half()),
        "out has dtype",
        id="out-dtype",
    ),
]


# decode_attention as MLA decode: the head dims and out of a latent cache


def _mla_valid(device):
    """A valid small MLA call: H = 16 over one latent cache, Dk = 48, Dv = 32 (a view), B = 2."""
    return mla_decode_inputs(16, 32, 16, 8, [8, 3], dtype=torch.float32, device=device)


def _mla_with_v_view(columns):
    """The valid MLA call with v_cache the latent cache's first `columns` columns."""

    def build(device):
        q, kv_cache, _, cache_seqlens = _mla_valid(device)
        return (q, kv_cache, kv_cache[..., :columns], cache_seqlens), {}

    return build


MLA_INVALID = [
    pytest.param(
        with_kwargs(_mla_valid, out=lambda d: torch.empty(2, 16, 48, device=d)),
        r"out has shape \(2, 16, 48\), expected \(2, 16, 32\)",
        id="out-has-dk-not-dv",
    ),
    pytest.param(
        replacing(_mla_valid, 2, lambda d: torch.randn(2, 1, 8, 600, device=d)),
        "v_cache head_dim 600 is outside the supported 16..512",
        id="dv-600",
    ),
    pytest.param(_mla_with_v_view(8), "v_cache head_dim 8 is outside the supported 16..512", id="dv-8"),
    pytest.param(
        replacing(_mla_valid, 1, lambda d: torch.randn(2, 1, 8, 64, device=d)),
        "k_cache has head_dim 64 but q has 48",
        id="k-cache-dk-mismatch",
    ),
    pytest.param(
        replacing(_mla_valid, 2, lambda d: torch.randn(2, 1, 9, 32, device=d)),
        "v_cache has L_max 9 but k_cache has 8",
        id="v-cache-lmax",
    ),
    pytest.param(
        with_kwargs(_mla_valid, window=lambda d: per_head_window([4, 4], d)),
        "window has heads 2 but k_cache has 1",
        id="window-heads",
    ),
]


# moba_attention(q, k, v, block_mask, **kwargs); the test adds block_size=4 when a case has none


def _moba_valid(device, dtype=torch.float32):
    q, k, v = attention_inputs(1, 4, 2, 8, 8, 32, dtype=dtype, device=device)
    return q, k, v, torch.ones(1, 4, 8, 2, dtype=torch.bool, device=device)


def _moba_replace(index, tensor_fn):
    """Valid inputs with q, k, v or block_mask (index 0..3) replaced by tensor_fn(device)."""
    return replacing(_moba_valid, index, tensor_fn)


def _moba_with_kwargs(**kwargs):
    return with_kwargs(_moba_valid, **kwargs)


def _keys_of_length(n_k):
    """Valid q and block_mask with k and v of another length (cross-attention, unsupported)."""

    def build(device):
        q, _, _, block_mask = _moba_valid(device)
        k, v = attention_inputs(1, 2, 2, n_k, n_k, 32, dtype=torch.float32, device=device)[1:]
        return (q, k, v, block_mask), {}

    return build


def _mask(*shape, dtype=torch.bool):
    return lambda d: torch.ones(*shape, dtype=dtype, device=d)


MOBA_INVALID = [
    pytest.param(
        _moba_replace(0, lambda d: torch.randn(4, 8, 32, device=d)), "q must have rank 4", id="q-rank3"
    ),
    pytest.param(_keys_of_length(9), "k has seq_len 9 but q has 8", id="cross-attention"),
    pytest.param(
        _moba_replace(2, lambda d: torch.randn(1, 2, 8, 16, device=d)),
        "v has head_dim 16 but q has 32",
        id="v-d",
    ),
    pytest.param(
        _moba_replace(0, lambda d: torch.randn(1, 3, 8, 32, device=d)), "not a multiple", id="hq-not-multiple"
    ),
    pytest.param(
        _moba_replace(0, lambda d: torch.randn(1, 4, 0, 32, device=d)), "q has seq_len 0", id="empty-q"
    ),
    pytest.param(
        lambda d: (_moba_valid(d, torch.float64), {"block_size": 4}),
        "q has dtype torch.float64",
        id="float64",
    ),
    pytest.param(_moba_replace(3, _mask(1, 4, 8)), "block_mask must have rank 4", id="mask-rank3"),
    pytest.param(
        _moba_replace(3, _mask(1, 4, 8, 2, dtype=torch.uint8)),
        "block_mask has dtype torch.uint8",
        id="mask-dtype",
    ),
    pytest.param(_moba_replace(3, _mask(2, 4, 8, 2)), "block_mask has batch 2 but q has 1", id="mask-batch"),
    pytest.param(
        _moba_replace(3, _mask(1, 2, 8, 2)), "block_mask has heads 2 but q has 4", id="mask-heads-kv"
    ),
    pytest.param(_moba_replace(3, _mask(1, 4, 7, 2)), "block_mask has seq_len 7 but q has 8", id="mask-seq"),
    pytest.param(_moba_replace(3, _mask(1, 4, 8, 3)), r"block_mask has 3 blocks, expected", id="mask-blocks"),
    pytest.param(
        _moba_replace(3, lambda d: torch.ones(1, 4, 8, 2, dtype=torch.bool, device="meta")),
        "block_mask is on meta but q is on",
        id="mask-device",
    ),
    pytest.param(_moba_with_kwargs(block_size=0), "block_size must be an int >= 1, got 0", id="block-size-0"),
    pytest.param(
        _moba_with_kwargs(block_size=-4), "block_size must be an int >= 1", id="block-size-negative"
    ),
    pytest.param(_moba_with_kwargs(block_size=4.0), "block_size must be an int >= 1", id="block-size-float"),
    pytest.param(_moba_with_kwargs(block_size=True), "block_size must be an int >= 1", id="block-size-bool"),
    pytest.param(_moba_with_kwargs(scale=float("inf")), "scale must be a finite float", id="scale-inf"),
    pytest.param(
        _moba_with_kwargs(out=lambda d: torch.empty(1, 4, 8, 16, device=d)), "out has shape", id="out-shape"
    ),
]


# moh_attention(q, k, v, gates, **kwargs)


def _moh_valid(device):
    q, k, v = attention_inputs(1, 4, 2, 8, 8, 32, dtype=torch.float32, device=device)
    return q, k, v, random_gates(1, 8, 4, 0.5, device=device)


def _moh_gates(tensor_fn):
    """Valid q, k, v with gates replaced by tensor_fn(device)."""
    return replacing(_moh_valid, 3, tensor_fn)


# q, k and v go through the shared check_qkv (tested in full with flash_attention): a few cases
# show it is wired in; the rest are the gates' own.
MOH_INVALID = [
    pytest.param(
        replacing(_moh_valid, 0, lambda d: torch.randn(4, 8, 32, device=d)),
        "q must have rank 4",
        id="q-rank3",
    ),
    pytest.param(
        replacing(_moh_valid, 0, lambda d: torch.randn(1, 3, 8, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(
        replacing(_moh_valid, 1, lambda d: torch.randn(1, 2, 8, 32, device=d).half()),
        "k has dtype torch.float16 but q has torch.float32",
        id="mixed-dtypes",
    ),
    pytest.param(
        _moh_gates(lambda d: torch.rand(1, 4, 8, 1, device=d)), "gates must have rank 3", id="gates-rank4"
    ),
    pytest.param(
        _moh_gates(lambda d: torch.rand(2, 8, 4, device=d)), "gates has batch 2 but q has 1", id="gates-b"
    ),
    pytest.param(
        _moh_gates(lambda d: torch.rand(1, 4, 8, device=d)),
        "gates has seq_len 4 but q has 8",
        id="gates-as-bhn",
    ),
    pytest.param(
        _moh_gates(lambda d: torch.rand(1, 8, 2, device=d)), "gates has heads 2 but q has 4", id="gates-h"
    ),
    pytest.param(
        _moh_gates(lambda d: torch.ones(1, 8, 4, dtype=torch.int32, device=d)),
        "gates has dtype torch.int32, expected one of",
        id="gates-int",
    ),
    pytest.param(
        _moh_gates(lambda d: torch.ones(1, 8, 4, dtype=torch.bool, device=d)),
        "gates has dtype torch.bool",
        id="gates-bool-mask",
    ),
    pytest.param(
        _moh_gates(lambda d: torch.rand(1, 8, 4, device="meta")),
        "gates is on meta but q is on",
        id="gates-device",
    ),
    pytest.param(
        with_kwargs(_moh_valid, out=lambda d: torch.empty(1, 4, 8, 16, device=d)),
        "out has shape",
        id="out-shape",
    ),
    pytest.param(with_kwargs(_moh_valid, scale=float("inf")), "scale must be a finite float", id="scale-inf"),
]
