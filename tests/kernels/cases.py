"""What the kernel tests share: input makers, the float64 references, the run-into-NaN helpers (an
output pre-filled with NaN, so a tile the kernel never wrote fails), and the tolerances with how
each was measured. Invalid-input tables: invalid_inputs.py."""

import math

import pytest
import torch

from kernels import decode_attention, flash_attention
from tests.helpers import assert_close, random_tensor
from workloads.reference import attention, visible_keys

FP32_REL_TOL = 1e-5
# The forward kernels in fp16 and bf16, measured under the interpreter, 3 seeds each: flash_attention
# and decode_attention over every shape of their test files (1 or 3 splits): fp16 <= 2.9e-4,
# bf16 <= 5.6e-3; moba_attention over its random, full, tile-shared and top-k masks: fp16 <= 2.4e-4,
# bf16 <= 4.6e-3; moh_attention over its random-gate shapes: fp32 <= 2.5e-7, fp16 <= 2.9e-4,
# bf16 <= 5.3e-3. (The interpreter truncates fp32 -> bf16 where a GPU rounds to nearest, so bf16
# reads high here.)
HALF_REL_TOL = {torch.float16: 5e-4, torch.bfloat16: 8e-3}
# flash_attention_backward over every shape of its test file, 3 seeds, kernel alone and end to end:
# fp16 <= 3.6e-4, bf16 <= 7.4e-3 (fp32 <= 4.4e-7), interpreted as above.
BACKWARD_HALF_REL_TOL = {torch.float16: 5e-4, torch.bfloat16: 1e-2}
# lse stays fp32 from scores of the rounded inputs: measured <= 7e-8 in fp16 and bf16 (interpreter,
# 3 seeds, with and without windows).
HALF_LSE_REL_TOL = 1e-6
# Not yet measured on a GPU: docs/architecture.md §4's typical bounds (forward and backward) until a GPU
# session records real numbers.
GPU_REL_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
GPU_LSE_REL_TOL = 1e-5  # fp32 sums and the GPU's approximate exp2, not yet measured


# flash_attention (and the prefill kernels whose inputs look the same: MoBA, MoH).


def attention_inputs(
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, *, head_dim_v=None, dtype, device, seed=0
):
    """q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (Dv = D unless given), standard
    normal, contiguous."""
    generator = torch.Generator().manual_seed(seed)
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    q = random_tensor(batch, n_q_heads, n_q, head_dim, dtype=dtype, device=device, generator=generator)
    k = random_tensor(batch, n_kv_heads, n_k, head_dim, dtype=dtype, device=device, generator=generator)
    v = random_tensor(batch, n_kv_heads, n_k, head_dim_v, dtype=dtype, device=device, generator=generator)
    return q, k, v


def attention_reference(q, k, v, **kwargs):
    """The float64 CPU reference on the very values the kernel saw."""
    return attention(*(t.detach().cpu().double() for t in (q, k, v)), **kwargs)


def run_flash_into_nan(q, k, v, out=None, **kwargs):
    """flash_attention writing into an output [B, Hq, Nq, Dv] pre-filled with NaN, so an unwritten
    tile fails. Returns what flash_attention returns: out, or (out, lse) with return_lse."""
    if out is None:
        out = torch.full((*q.shape[:3], v.shape[3]), float("nan"), dtype=q.dtype, device=q.device)
    result = flash_attention(q, k, v, out=out, **kwargs)
    assert (result[0] if kwargs.get("return_lse") else result) is out
    return result


def assert_lse_close(lse, ref_lse, *, rel_tol):
    """float32 [B, Hq, Nq]; -inf exactly where the reference has it (rows without keys), the
    finite rest within rel_tol."""
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    no_key = ref_lse == float("-inf")
    assert torch.equal(lse.cpu() == float("-inf"), no_key), "lse: -inf rows differ from the reference"
    assert_close(lse.cpu()[~no_key], ref_lse[~no_key], rel_tol=rel_tol, name="lse")


def backward_inputs(
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, *, dtype, device, seed=0
):
    """q [B, Hq, Nq, Dqk], k [B, Hkv, Nk, Dqk], v [B, Hkv, Nk, Dv], grad_out [B, Hq, Nq, Dv]."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return random_tensor(*shape, dtype=dtype, device=device, generator=generator)

    q = draw(batch, n_q_heads, n_q, head_dim_qk)
    k = draw(batch, n_kv_heads, n_k, head_dim_qk)
    v = draw(batch, n_kv_heads, n_k, head_dim_v)
    grad_out = draw(batch, n_q_heads, n_q, head_dim_v)
    return q, k, v, grad_out


# decode_attention


DECODE_SPLITS = [
    pytest.param(None, id="splits-default"),
    pytest.param(1, id="splits1"),
    pytest.param(3, id="splits3"),
    pytest.param(9, id="splits9-more-than-blocks"),
]


def decode_inputs(n_q_heads, n_kv_heads, max_len, head_dim, lengths, *, dtype, device, seed=0):
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


def mla_decode_inputs(n_heads, latent_dim, rope_dim, max_len, lengths, *, dtype, device, seed=0):
    """q [B, H, d_c + d_R], kv_cache [B, 1, L_max, d_c + d_R], v = kv_cache[..., :d_c] (a view),
    cache_seqlens int32 [B]."""
    q, kv_cache, _, cache_seqlens = decode_inputs(
        n_heads, 1, max_len, latent_dim + rope_dim, lengths, dtype=dtype, device=device, seed=seed
    )
    return q, kv_cache, kv_cache[..., :latent_dim], cache_seqlens


def mla_scale(head_dim, rope_dim):
    """MLA's softmax scale: 1/sqrt(d_h + d_R), not 1/sqrt(Dk) = 1/sqrt(d_c + d_R)."""
    return 1.0 / math.sqrt(head_dim + rope_dim)


def decode_reference(q, k_cache, v_cache, cache_seqlens, **kwargs):
    """The float64 CPU reference: one query position per sequence, keys masked past its length."""
    q64, k64, v64 = (t.detach().cpu().double() for t in (q, k_cache, v_cache))
    return attention(q64[:, :, None], k64, v64, kv_lengths=cache_seqlens.cpu(), **kwargs)[:, :, 0]


def run_decode_into_nan(q, k_cache, v_cache, cache_seqlens, out=None, **kwargs):
    """decode_attention writing into an output [B, Hq, Dv] pre-filled with NaN, so an unwritten row fails."""
    if out is None:
        shape = (*q.shape[:2], v_cache.shape[-1])
        out = torch.full(shape, float("nan"), dtype=q.dtype, device=q.device)
    result = decode_attention(q, k_cache, v_cache, cache_seqlens, out=out, **kwargs)
    assert result is out
    return out


def per_head_window(values, device):
    """The int32 [Hkv] tensor of per-KV-head windows."""
    return torch.tensor(values, dtype=torch.int32, device=device)


def poison_invisible(k_cache, v_cache, cache_seqlens, window, sink):
    """Copies of the caches with NaN in every row no query may see (past a sequence's length, and
    between the sink and the window of a streaming head): reading one would make the output NaN."""
    batch, n_kv_heads, max_len = k_cache.shape[:3]
    rows = torch.zeros(1, dtype=torch.long, device=k_cache.device)
    visible = visible_keys(
        batch, n_kv_heads, rows, 1, max_len, causal=False, kv_lengths=cache_seqlens, window=window, sink=sink
    )[:, :, 0, 0, :, None]  # [B, Hkv, L_max, 1]
    return k_cache.masked_fill(~visible, float("nan")), v_cache.masked_fill(~visible, float("nan"))


# moh_attention


def random_gates(batch, n_q, n_heads, density, *, dtype=torch.float32, device="cpu", seed=0):
    """gates [B, Nq, H]: each (token, head) active with probability `density`, weight in [0.25, 1.25)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    active = torch.rand(batch, n_q, n_heads, generator=generator) < density
    weights = 0.25 + torch.rand(batch, n_q, n_heads, generator=generator)
    return torch.where(active, weights, 0.0).to(device=device, dtype=dtype)
