"""FlashAttention-2 style forward: one program per (query block, batch · query head), online softmax
in fp32 over key blocks, GQA by index arithmetic (K/V are never repeated in memory)."""

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


@triton.jit
def _attend_key_block(
    acc, l_i, m_i, q,
    k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    start_n, offs_m, offs_n, offs_d, n_k, diag, qk_scale,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Fold keys [start_n, start_n + BLOCK_N) into the running (acc, l_i, m_i) of one query block.

    MASKED blocks may run past n_k or cross the causal diagonal; unmasked ones are fully visible
    to every query row, which saves the bounds checks and the compare-and-select on most blocks.
    """
    offs_key = start_n + offs_n  # [BLOCK_N]
    # [BLOCK_N, BLOCK_D] each
    k = load_tile(k_base, offs_key, offs_d, stride_kn, stride_kd, n_k, HEAD_DIM, BLOCK_D, MASKED)
    v = load_tile(v_base, offs_key, offs_d, stride_vn, stride_vd, n_k, HEAD_DIM, BLOCK_D, MASKED)
    # Scores in the log2 domain: scale · log2(e) is folded into qk_scale so softmax uses exp2.
    qk = dot(q, tl.trans(k), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_M, BLOCK_N]
    if MASKED:
        visible = offs_key[None, :] < n_k  # [1, BLOCK_N]
        if CAUSAL:
            # Bottom-right alignment: query i sees key j iff j <= i + (n_k - n_q).
            visible = visible & (offs_key[None, :] <= offs_m[:, None] + diag)  # [BLOCK_M, BLOCK_N]
        qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))  # [BLOCK_M]
    if MASKED:
        # A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
        m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new_safe = m_new
    p = tl.math.exp2(qk - m_new_safe[:, None])  # [BLOCK_M, BLOCK_N]
    alpha = tl.math.exp2(m_i - m_new_safe)  # [BLOCK_M], 0 on the first visible block
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = dot(p.to(v.dtype), v, acc, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_D] fp32
    return acc, l_i, m_new


@triton.jit
def _flash_attention_fwd(
    Q, K, V, Out,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_q_heads, n_q, n_k, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    if CAUSAL:
        # The last query blocks see the most keys: launch them first so the grid's tail is short.
        pid_m = tl.num_programs(0) - 1 - pid_m
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // n_q_heads).to(tl.int64)
    off_h = (pid_bh % n_q_heads).to(tl.int64)
    off_kv_h = off_h // GROUP  # GQA: query heads [g·GROUP, (g+1)·GROUP) share KV head g

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D], padded past HEAD_DIM when it is not a power of two
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # [BLOCK_M, BLOCK_D]
    q = load_tile(q_base, offs_m, offs_d, stride_qm, stride_qd, n_q, HEAD_DIM, BLOCK_D, True)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of scores (log2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running numerator · V

    diag = n_k - n_q
    if CAUSAL:
        # Keys j <= start_m + diag are visible to every row of the block; keys past the last row's
        # diagonal are visible to none, so those blocks are never visited (about half the work).
        full_end = tl.minimum(tl.maximum(start_m + diag + 1, 0), n_k)
        hi = tl.minimum(tl.maximum(start_m + BLOCK_M + diag, 0), n_k)
    else:
        full_end = n_k
        hi = n_k
    full_end = (full_end // BLOCK_N) * BLOCK_N

    for start_n in range(0, full_end, BLOCK_N):
        acc, l_i, m_i = _attend_key_block(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            start_n, offs_m, offs_n, offs_d, n_k, diag, qk_scale,
            CAUSAL, False, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip
    for start_n in range(full_end, hi, BLOCK_N):
        acc, l_i, m_i = _attend_key_block(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            start_n, offs_m, offs_n, offs_d, n_k, diag, qk_scale,
            CAUSAL, True, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip

    # Rows that saw no key (causal with n_q > n_k) have l_i = 0 and acc = 0: they output zeros.
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    o_ptrs = o_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(
        o_ptrs, acc.to(Out.dtype.element_ty), mask=(offs_m[:, None] < n_q) & (offs_d[None, :] < HEAD_DIM)
    )


def block_config(head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for one launch, before any autotuning.

    Interpreted: small tiles keep the CPU interpreter fast and still cross several block edges at
    test sizes. On a GPU (checked by compiling for sm_90: no register spills, shared memory within
    an H100's): 128×64 tiles for 2-byte types up to head_dim 128, 64×32 with 8 warps at 256.
    fp32 with input_precision="ieee" runs its dots on FMA units, whose operands live in registers,
    so it takes small tiles.
    """
    if is_interpreted():
        return 32, 16, 4, 1
    block_d = triton.next_power_of_2(head_dim)
    if dtype == torch.float32:
        return (64, 16, 8, 2) if block_d <= 64 else (32, 16, 8, 2)
    if block_d <= 64:
        return 128, 64, 4, 3
    if block_d <= 128:
        return 128, 64, 8, 3
    return 64, 32, 8, 2


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v, forward only.

    q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, D], Hq % Hkv == 0 (MHA, GQA, MQA): query
    head h reads KV head h // (Hq // Hkv). dtype float32, float16 or bfloat16 (all the same);
    D in 16..256; any strides. `causal` aligns the mask bottom-right: query i sees key j iff
    j <= i + Nk - Nq; a query that sees no key (Nq > Nk) outputs zeros. `scale` defaults to
    1/sqrt(D). `out` [B, Hq, Nq, D] (q's dtype and device), when given, is written and returned.
    Returns o [B, Hq, Nq, D] in q's dtype.
    """
    fn = "flash_attention"
    check_rank(fn, "q", q, "[B, Hq, Nq, D]")
    check_rank(fn, "k", k, "[B, Hkv, Nk, D]")
    check_rank(fn, "v", v, "[B, Hkv, Nk, D]")
    batch, n_q_heads, n_q, head_dim = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    for name, tensor in (("k", k), ("v", v)):
        check_dim(fn, name, "batch", tensor.shape[0], "q", batch)
        check_dim(fn, name, "head_dim", tensor.shape[3], "q", head_dim)
    check_dim(fn, "v", "heads", v.shape[1], "k", n_kv_heads)
    check_dim(fn, "v", "seq_len", v.shape[2], "k", n_k)
    check_positive(fn, "q", q.shape, {"batch": 0, "heads": 1, "seq_len": 2})
    check_positive(fn, "k", k.shape, {"heads": 1, "seq_len": 2})
    if n_q_heads % n_kv_heads:
        raise ValueError(
            f"{fn}: q has {n_q_heads} heads, not a multiple of the {n_kv_heads} heads of k and v"
        )
    check_head_dim(fn, head_dim)
    dtype = check_float_dtypes(fn, {"q": q, "k": k, "v": v})
    device = check_devices(fn, {"q": q, "k": k, "v": v})
    check_scale(fn, scale)
    if out is None:
        out = torch.empty(q.shape, dtype=dtype, device=device)
    else:
        check_out(fn, out, tuple(q.shape), dtype, device)

    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    block_m, block_n, num_warps, num_stages = block_config(head_dim, dtype)
    grid = (triton.cdiv(n_q, block_m), batch * n_q_heads)
    _flash_attention_fwd[grid](
        q, k, v, out,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        n_q_heads, n_q, n_k, scale * LOG2_E,
        GROUP=n_q_heads // n_kv_heads,
        HEAD_DIM=head_dim,
        CAUSAL=bool(causal),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(head_dim),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        UPCAST_DOT=upcast_dot(dtype),
        num_warps=num_warps,
        num_stages=num_stages,
    )  # fmt: skip
    return out
