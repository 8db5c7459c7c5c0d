"""Split-KV flash-decoding for one new token per sequence over a ragged KV cache.

Stage 1 runs one program per (batch, KV head, split): it attends all R = Hq / Hkv query heads of
its KV head together (one padded [BLOCK_R, D] tile, so each K/V element is read once per group)
over its slice of the cache and writes a normalised fp32 partial output and its log-sum-exp.
Stage 2 merges the splits of each (batch, query head) with those log-sum-exp weights.
"""

import functools
import math

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    check_devices,
    check_dim,
    check_float_dtypes,
    check_head_dim,
    check_out,
    check_positive,
    check_rank,
    check_scale,
    dot,
    is_interpreted,
    load_tile,
    upcast_dot,
)

MIN_BLOCKS_PER_SPLIT = 4
MAX_DEFAULT_SPLITS = 64


@triton.jit
def _decode_split_kv(
    Q, K, V, SEQLENS, O_PART, LSE_PART,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_sb,
    stride_pb, stride_ph, stride_ps, stride_pd,
    stride_lb, stride_lh, stride_ls,
    max_len, num_splits, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    off_b = tl.program_id(0).to(tl.int64)
    off_kv_h = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)

    # Lengths are clamped here rather than checked on the host, which would sync the device.
    seq_len = tl.minimum(tl.maximum(tl.load(SEQLENS + off_b * stride_sb), 0), max_len)
    # Each sequence divides its own length, in whole key blocks, so ragged batches stay balanced;
    # trailing splits of a short sequence are empty.
    split_len = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    offs_r = tl.arange(0, BLOCK_R)  # [BLOCK_R], query heads of this KV head, padded to >= 16 for tl.dot
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D], padded past HEAD_DIM when it is not a power of two
    heads = off_kv_h * GROUP + offs_r  # [BLOCK_R]
    q_base = Q + off_b * stride_qb + off_kv_h * GROUP * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # [BLOCK_R, BLOCK_D]
    q = load_tile(q_base, offs_r, offs_d, stride_qh, stride_qd, GROUP, HEAD_DIM, BLOCK_D, True)

    m_i = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)  # running max (log2 domain)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)  # running numerator · V
    for start_n in range(start, end, BLOCK_N):
        offs_key = start_n + offs_n  # [BLOCK_N]
        # [BLOCK_N, BLOCK_D] each
        k = load_tile(k_base, offs_key, offs_d, stride_kn, stride_kd, end, HEAD_DIM, BLOCK_D, True)
        v = load_tile(v_base, offs_key, offs_d, stride_vn, stride_vd, end, HEAD_DIM, BLOCK_D, True)
        qk = dot(q, tl.trans(k), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_R, BLOCK_N]
        qk = tl.where(offs_key[None, :] < end, qk, float("-inf"))
        # Every visited block holds at least one key (start_n < end), so m_new is finite.
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # [BLOCK_R]
        p = tl.math.exp2(qk - m_new[:, None])  # [BLOCK_R, BLOCK_N]
        alpha = tl.math.exp2(m_i - m_new)  # [BLOCK_R], 0 on the first block
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = dot(p.to(v.dtype), v, acc, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_R, BLOCK_D]
        m_i = m_new

    # An empty split leaves m_i = -inf and l_i = 0: lse = -inf (weight 0 in stage 2), output 0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    lse = m_i + tl.log2(l_safe)  # [BLOCK_R], log2 domain
    acc = acc / l_safe[:, None]
    part_ptrs = (
        O_PART
        + off_b * stride_pb
        + heads[:, None] * stride_ph
        + split * stride_ps
        + offs_d[None, :] * stride_pd
    )
    row_in = offs_r < GROUP
    tl.store(part_ptrs, acc, mask=row_in[:, None] & (offs_d[None, :] < HEAD_DIM))
    tl.store(LSE_PART + off_b * stride_lb + heads * stride_lh + split * stride_ls, lse, mask=row_in)


@triton.jit
def _decode_combine_splits(
    O_PART, LSE_PART, Out,
    stride_pb, stride_ph, stride_ps, stride_pd,
    stride_lb, stride_lh, stride_ls,
    stride_ob, stride_oh, stride_od,
    num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    off_b = tl.program_id(0).to(tl.int64)
    off_h = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D]
    d_mask = offs_d < HEAD_DIM
    part_base = O_PART + off_b * stride_pb + off_h * stride_ph
    lse_base = LSE_PART + off_b * stride_lb + off_h * stride_lh

    m = float("-inf")  # running max of the splits' lse
    denom = 0.0
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)  # [BLOCK_D]
    for start_s in range(0, num_splits, BLOCK_S):
        offs_s = start_s + tl.arange(0, BLOCK_S)  # [BLOCK_S]
        s_in = offs_s < num_splits
        lse = tl.load(lse_base + offs_s * stride_ls, mask=s_in, other=float("-inf"))  # [BLOCK_S]
        part = tl.load(
            part_base + offs_s[:, None] * stride_ps + offs_d[None, :] * stride_pd,
            mask=s_in[:, None] & d_mask[None, :],
            other=0.0,
        )  # [BLOCK_S, BLOCK_D]
        m_new = tl.maximum(m, tl.max(lse, 0))
        # All splits so far empty (lse = -inf): subtract 0 so the weights are 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        weight = tl.math.exp2(lse - m_safe)  # [BLOCK_S], 0 for empty splits
        alpha = tl.math.exp2(m - m_safe)
        denom = denom * alpha + tl.sum(weight, 0)
        acc = acc * alpha + tl.sum(weight[:, None] * part, 0)
        m = m_new
    # A sequence of length 0 has only empty splits: denom = 0, acc = 0, output zeros.
    out = acc / tl.where(denom == 0.0, 1.0, denom)
    out_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_d * stride_od
    tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=d_mask)


def block_config(group: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_N, num_warps, num_stages) for stage 1, before any autotuning.

    BLOCK_R holds the R query heads of one KV head, padded to tl.dot's minimum of 16 rows.
    Decode is bandwidth-bound: 64-key blocks with 3 loads in flight for 2-byte types up to
    head_dim 128, 32-key blocks with 2 at 256, so K/V stages fit in shared memory even for a
    128-head group; a tall or wide group tile gets 8 warps so its fp32 accumulator stays in
    registers. fp32 ("ieee") dots run on FMA units and take 16-key blocks. Checked by compiling
    for sm_90: no register spills except R = 128 with head_dim 160 (2-byte) or > 64 (fp32).
    """
    block_r = max(16, triton.next_power_of_2(group))
    if is_interpreted():
        return block_r, 16, 4, 1
    block_d = triton.next_power_of_2(head_dim)
    num_warps = 8 if block_r * block_d > 32 * 128 else 4
    if dtype == torch.float32:
        return block_r, 16, 8 if block_r * block_d > 16 * 128 else 4, 2
    if block_d <= 128:
        return block_r, 64, num_warps, 3
    return block_r, 32, num_warps, 2


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(batch_kv_heads: int, max_len: int, block_n: int, num_sms: int) -> int:
    """Splits per sequence so that the stage-1 grid fills the device.

    Stage 1 has batch_kv_heads · splits programs; aim for about two programs per SM, but give each
    split at least MIN_BLOCKS_PER_SPLIT key blocks of the longest possible sequence, so that the
    extra partial writes and the combine stay small next to the cache reads.
    """
    if batch_kv_heads >= num_sms:
        return 1
    wanted = triton.cdiv(2 * num_sms, batch_kv_heads)
    useful = max(1, triton.cdiv(max_len, block_n) // MIN_BLOCKS_PER_SPLIT)
    return max(1, min(wanted, useful, MAX_DEFAULT_SPLITS))


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over the first cache_seqlens[b] cached keys.

    q [B, Hq, D]; k_cache, v_cache [B, Hkv, L_max, D] with Hq % Hkv == 0 (query head h reads KV
    head h // (Hq // Hkv)); cache_seqlens int32 [B], each in 0..L_max (larger values are clamped
    to L_max; a length of 0 gives a zero output). dtype float32, float16 or bfloat16 (all the
    same), D in 16..256, any strides. `scale` defaults to 1/sqrt(D). `num_splits` (>= 1) is the
    number of cache slices per sequence reduced in parallel; None picks one from B·Hkv, L_max
    and the SM count (`default_num_splits`) without reading cache_seqlens on the host.
    `out` [B, Hq, D] (q's dtype and device), when given, is written and returned.
    Returns o [B, Hq, D] in q's dtype.
    """
    fn = "decode_attention"
    check_rank(fn, "q", q, "[B, Hq, D]")
    check_rank(fn, "k_cache", k_cache, "[B, Hkv, L_max, D]")
    check_rank(fn, "v_cache", v_cache, "[B, Hkv, L_max, D]")
    check_rank(fn, "cache_seqlens", cache_seqlens, "[B]")
    batch, n_q_heads, head_dim = q.shape
    n_kv_heads, max_len = k_cache.shape[1], k_cache.shape[2]
    for name, tensor in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_dim(fn, name, "batch", tensor.shape[0], "q", batch)
        check_dim(fn, name, "head_dim", tensor.shape[3], "q", head_dim)
    check_dim(fn, "v_cache", "heads", v_cache.shape[1], "k_cache", n_kv_heads)
    check_dim(fn, "v_cache", "L_max", v_cache.shape[2], "k_cache", max_len)
    check_dim(fn, "cache_seqlens", "batch", cache_seqlens.shape[0], "q", batch)
    check_positive(fn, "q", q.shape, {"batch": 0, "heads": 1})
    check_positive(fn, "k_cache", k_cache.shape, {"heads": 1, "L_max": 2})
    if n_q_heads % n_kv_heads:
        raise ValueError(
            f"{fn}: q has {n_q_heads} heads, not a multiple of the {n_kv_heads} heads of k_cache and v_cache"
        )
    check_head_dim(fn, head_dim)
    dtype = check_float_dtypes(fn, {"q": q, "k_cache": k_cache, "v_cache": v_cache})
    if cache_seqlens.dtype != torch.int32:
        raise ValueError(f"{fn}: cache_seqlens has dtype {cache_seqlens.dtype}, expected torch.int32")
    device = check_devices(
        fn, {"q": q, "k_cache": k_cache, "v_cache": v_cache, "cache_seqlens": cache_seqlens}
    )
    check_scale(fn, scale)
    if num_splits is not None and (
        isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1
    ):
        raise ValueError(f"{fn}: num_splits must be an int >= 1 or None, got {num_splits!r}")
    if out is None:
        out = torch.empty(q.shape, dtype=dtype, device=device)
    else:
        check_out(fn, out, tuple(q.shape), dtype, device)

    group = n_q_heads // n_kv_heads
    block_r, block_n, num_warps, num_stages = block_config(group, head_dim, dtype)
    if num_splits is None:
        num_sms = 1 if is_interpreted() else _sm_count(device.index if device.index is not None else 0)
        num_splits = default_num_splits(batch * n_kv_heads, max_len, block_n, num_sms)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    block_d = triton.next_power_of_2(head_dim)

    out_part = torch.empty(batch, n_q_heads, num_splits, head_dim, dtype=torch.float32, device=device)
    lse_part = torch.empty(batch, n_q_heads, num_splits, dtype=torch.float32, device=device)
    _decode_split_kv[(batch, n_kv_heads, num_splits)](
        q, k_cache, v_cache, cache_seqlens, out_part, lse_part,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), cache_seqlens.stride(0),
        *out_part.stride(), *lse_part.stride(),
        max_len, num_splits, scale * LOG2_E,
        GROUP=group,
        HEAD_DIM=head_dim,
        BLOCK_R=block_r,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        UPCAST_DOT=upcast_dot(dtype),
        num_warps=num_warps,
        num_stages=num_stages,
    )  # fmt: skip
    _decode_combine_splits[(batch, n_q_heads)](
        out_part, lse_part, out,
        *out_part.stride(), *lse_part.stride(), *out.stride(),
        num_splits,
        HEAD_DIM=head_dim,
        BLOCK_S=min(triton.next_power_of_2(num_splits), 16),
        BLOCK_D=block_d,
        num_warps=4 if block_d >= 128 else 2,
    )  # fmt: skip
    return out
