"""FlashAttention-2 style backward kernels and their launches, GQA-aware. The public entry point that
checks inputs and runs them (and autograd through forward and backward) is in `interface`.

Three launches recompute the attention probabilities from the forward's log-sum-exp instead of
storing them (no [Nq, Nk] tensor):
1. `_attention_bwd_preprocess`, per query block: delta = rowsum(dO ∘ O) and the lse in the log2
   domain, both fp32 [B, Hq, Nq].
2. `_attention_bwd_dkdv`, per (key block, batch · KV head): dK and dV of its keys, summed over the
   query blocks of every query head of its group inside the program (GQA/MQA without atomics and
   without repeating K/V).
3. `_attention_bwd_dq`, per (query block, batch · query head): dQ over the visible key blocks.

With P = softmax(scale · Q Kᵀ) (recomputed as exp2(scale · log2(e) · Q Kᵀ − lse · log2(e))):
dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − delta), dQ = scale · dS K, dK = scale · dSᵀ Q.
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    Launch,
    batch_and_heads,
    dot,
    dot_precision,
    is_interpreted,
    load_tile,
    upcast_dot,
)

LOG2_E_IN_KERNEL = tl.constexpr(LOG2_E)  # a module global a kernel reads must be a constexpr


@triton.jit
def _attention_bwd_preprocess(
    Out, DO, LSE, Delta, LSE2,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_lb, stride_lh, stride_lm,
    n_q_heads, n_q,
    HEAD_DIM_V: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    off_b, off_h, _ = batch_and_heads(tl.program_id(1), n_q_heads, 1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_dv = tl.arange(0, BLOCK_DV)  # [BLOCK_DV]
    row_in = offs_m < n_q

    o_base = Out + off_b * stride_ob + off_h * stride_oh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    # [BLOCK_M, BLOCK_DV] each
    o = load_tile(o_base, offs_m, offs_dv, stride_om, stride_od, n_q, HEAD_DIM_V, BLOCK_DV, True)
    do = load_tile(do_base, offs_m, offs_dv, stride_dom, stride_dod, n_q, HEAD_DIM_V, BLOCK_DV, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # [BLOCK_M]

    lse = tl.load(LSE + off_b * stride_lb + off_h * stride_lh + offs_m * stride_lm, mask=row_in, other=0.0)
    # A row that sees no key has lse = -inf; +inf instead makes its recomputed P underflow to 0
    # (exp2(s - inf)), so it adds nothing to dK, dV and gets dQ = 0 without a per-element test.
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2_E_IN_KERNEL)  # [BLOCK_M]

    rows = (off_b * n_q_heads + off_h) * n_q + offs_m  # Delta and LSE2 are contiguous [B, Hq, Nq]
    tl.store(Delta + rows, delta, mask=row_in)
    tl.store(LSE2 + rows, lse2, mask=row_in)


@triton.jit
def _dkdv_query_block(
    dk, dv, k, v,
    q_base, do_base, lse2_base, delta_base,
    stride_qm, stride_qd, stride_dom, stride_dod,
    start_m, offs_m_block, offs_key, offs_dk, offs_dv, n_q, diag, qk_scale,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Add the contribution of queries [start_m, start_m + BLOCK_M) of one head to dK, dV of a key
    block, in the transposed orientation (keys as rows) so the accumulators need no transpose.

    MASKED blocks may run past n_q or cross the causal diagonal; unmasked ones are fully inside.
    """
    offs_m = start_m + offs_m_block  # [BLOCK_M]
    # [BLOCK_M, BLOCK_DK] and [BLOCK_M, BLOCK_DV]
    q = load_tile(q_base, offs_m, offs_dk, stride_qm, stride_qd, n_q, HEAD_DIM_QK, BLOCK_DK, MASKED)
    do = load_tile(do_base, offs_m, offs_dv, stride_dom, stride_dod, n_q, HEAD_DIM_V, BLOCK_DV, MASKED)
    if MASKED:
        # Rows past n_q get lse = +inf, so their P is 0 and they add nothing.
        lse2 = tl.load(lse2_base + offs_m, mask=offs_m < n_q, other=float("inf"))  # [BLOCK_M]
        delta = tl.load(delta_base + offs_m, mask=offs_m < n_q, other=0.0)  # [BLOCK_M]
    else:
        lse2 = tl.load(lse2_base + offs_m)
        delta = tl.load(delta_base + offs_m)
    qk_t = dot(k, tl.trans(q), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_N, BLOCK_M]
    p_t = tl.math.exp2(qk_t - lse2[None, :])  # [BLOCK_N, BLOCK_M]
    if MASKED and CAUSAL:
        # Bottom-right alignment: query i sees key j iff j <= i + (n_k - n_q). A select, so a
        # masked score above the row's lse (overflowing exp2 to inf) still becomes an exact 0.
        p_t = tl.where(offs_key[:, None] <= offs_m[None, :] + diag, p_t, 0.0)
    dv = dot(p_t.to(do.dtype), do, dv, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_N, BLOCK_DV]
    dp_t = dot(v, tl.trans(do), None, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_N, BLOCK_M]
    ds_t = p_t * (dp_t - delta[None, :])  # [BLOCK_N, BLOCK_M]
    dk = dot(ds_t.to(q.dtype), q, dk, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_N, BLOCK_DK]
    return dk, dv


@triton.jit
def _attention_bwd_dkdv(
    Q, K, V, DO, LSE2, Delta, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    n_q_heads, n_kv_heads, n_q, n_k, qk_scale, scale,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    off_b, off_kv_h, _ = batch_and_heads(tl.program_id(1), n_kv_heads, 1)
    start_n = tl.program_id(0) * BLOCK_N
    offs_key = start_n + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_m_block = tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_dk = tl.arange(0, BLOCK_DK)  # [BLOCK_DK], padded past HEAD_DIM_QK when not a power of two
    offs_dv = tl.arange(0, BLOCK_DV)  # [BLOCK_DV]
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # Loaded once, reused by every query block of every head of the group. [BLOCK_N, BLOCK_D*]
    k = load_tile(k_base, offs_key, offs_dk, stride_kn, stride_kd, n_k, HEAD_DIM_QK, BLOCK_DK, True)
    v = load_tile(v_base, offs_key, offs_dv, stride_vn, stride_vd, n_k, HEAD_DIM_V, BLOCK_DV, True)
    dk = tl.zeros([BLOCK_N, BLOCK_DK], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)

    # Query i sees key j iff j <= i + diag. Query blocks before `first` see none of this block's
    # keys and are skipped; from `full_start` on, every row sees every key (no mask). Blocks
    # past `full_rows` run off the end of the queries and mask their rows.
    diag = n_k - n_q
    full_rows = (n_q // BLOCK_M) * BLOCK_M
    if CAUSAL:
        first = (tl.maximum(start_n - diag, 0) // BLOCK_M) * BLOCK_M
        full_start = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - diag, 0), BLOCK_M) * BLOCK_M
    else:
        first = 0
        full_start = 0
    diagonal_end = tl.minimum(tl.maximum(full_start, first), full_rows)

    for head_in_group in range(GROUP):
        off_h = off_kv_h * GROUP + head_in_group
        q_base = Q + off_b * stride_qb + off_h * stride_qh
        do_base = DO + off_b * stride_dob + off_h * stride_doh
        row_offset = (off_b * n_q_heads + off_h) * n_q  # LSE2 and Delta are contiguous [B, Hq, Nq]
        # Three ranges of query blocks, unrolled: crossing the diagonal (masked), fully visible
        # (unmasked), and the partial last block (masked).
        for phase in tl.static_range(3):
            if phase == 0:
                lo = first
                hi = diagonal_end
            elif phase == 1:
                lo = diagonal_end
                hi = full_rows
            else:
                lo = tl.maximum(full_rows, first)
                hi = n_q
            for start_m in range(lo, hi, BLOCK_M):
                dk, dv = _dkdv_query_block(
                    dk, dv, k, v, q_base, do_base, LSE2 + row_offset, Delta + row_offset,
                    stride_qm, stride_qd, stride_dom, stride_dod,
                    start_m, offs_m_block, offs_key, offs_dk, offs_dv, n_q, diag, qk_scale,
                    CAUSAL, phase != 1, HEAD_DIM_QK, HEAD_DIM_V, BLOCK_DK, BLOCK_DV,
                    DOT_PRECISION, UPCAST_DOT,
                )  # fmt: skip

    # Keys that no query sees keep dK = dV = 0. dS was taken w.r.t. the scaled scores, so dK
    # carries the scale.
    key_in = offs_key[:, None] < n_k
    dk_base = DK + off_b * stride_dkb + off_kv_h * stride_dkh
    dk_ptrs = dk_base + offs_key[:, None] * stride_dkn + offs_dk[None, :] * stride_dkd
    tl.store(dk_ptrs, (dk * scale).to(DK.dtype.element_ty), mask=key_in & (offs_dk[None, :] < HEAD_DIM_QK))
    dv_base = DV + off_b * stride_dvb + off_kv_h * stride_dvh
    dv_ptrs = dv_base + offs_key[:, None] * stride_dvn + offs_dv[None, :] * stride_dvd
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=key_in & (offs_dv[None, :] < HEAD_DIM_V))


@triton.jit
def _dq_key_block(
    dq, q, do, lse2, delta,
    k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    start_n, offs_m, offs_n, offs_dk, offs_dv, n_k, diag, qk_scale,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Add the contribution of keys [start_n, start_n + BLOCK_N) to dQ of one query block.

    MASKED blocks may run past n_k or cross the causal diagonal; unmasked ones are fully visible.
    """
    offs_key = start_n + offs_n  # [BLOCK_N]
    # [BLOCK_N, BLOCK_DK] and [BLOCK_N, BLOCK_DV]
    k = load_tile(k_base, offs_key, offs_dk, stride_kn, stride_kd, n_k, HEAD_DIM_QK, BLOCK_DK, MASKED)
    v = load_tile(v_base, offs_key, offs_dv, stride_vn, stride_vd, n_k, HEAD_DIM_V, BLOCK_DV, MASKED)
    qk = dot(q, tl.trans(k), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_M, BLOCK_N]
    p = tl.math.exp2(qk - lse2[:, None])  # [BLOCK_M, BLOCK_N]
    if MASKED:
        visible = offs_key[None, :] < n_k  # [1, BLOCK_N]
        if CAUSAL:
            visible = visible & (offs_key[None, :] <= offs_m[:, None] + diag)  # [BLOCK_M, BLOCK_N]
        p = tl.where(visible, p, 0.0)
    dp = dot(do, tl.trans(v), None, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])  # [BLOCK_M, BLOCK_N]
    return dot(ds.to(k.dtype), k, dq, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_DK]


@triton.jit
def _attention_bwd_dq(
    Q, K, V, DO, LSE2, Delta, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    n_q_heads, n_q, n_k, qk_scale, scale,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    if CAUSAL:
        # The last query blocks see the most keys: launch them first so the grid's tail is short.
        pid_m = tl.num_programs(0) - 1 - pid_m
    off_b, off_h, off_kv_h = batch_and_heads(tl.program_id(1), n_q_heads, GROUP)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_dk = tl.arange(0, BLOCK_DK)  # [BLOCK_DK]
    offs_dv = tl.arange(0, BLOCK_DV)  # [BLOCK_DV]
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    q = load_tile(q_base, offs_m, offs_dk, stride_qm, stride_qd, n_q, HEAD_DIM_QK, BLOCK_DK, True)
    do = load_tile(do_base, offs_m, offs_dv, stride_dom, stride_dod, n_q, HEAD_DIM_V, BLOCK_DV, True)
    rows = (off_b * n_q_heads + off_h) * n_q + offs_m  # LSE2 and Delta are contiguous [B, Hq, Nq]
    # Rows past n_q get lse = +inf: P = 0, so they need no mask inside the loop.
    lse2 = tl.load(LSE2 + rows, mask=offs_m < n_q, other=float("inf"))  # [BLOCK_M]
    delta = tl.load(Delta + rows, mask=offs_m < n_q, other=0.0)  # [BLOCK_M]
    dq = tl.zeros([BLOCK_M, BLOCK_DK], dtype=tl.float32)

    diag = n_k - n_q
    if CAUSAL:
        # As in the forward: keys j <= start_m + diag are visible to every row of the block, keys
        # past the last row's diagonal to none (never visited: a block of rows that see no key
        # at all visits nothing and stores dQ = 0).
        full_end = tl.minimum(tl.maximum(start_m + diag + 1, 0), n_k)
        hi = tl.minimum(tl.maximum(start_m + BLOCK_M + diag, 0), n_k)
    else:
        full_end = n_k
        hi = n_k
    full_end = (full_end // BLOCK_N) * BLOCK_N
    # Two ranges of key blocks, unrolled: fully visible (unmasked), then the rest (masked).
    for phase in tl.static_range(2):
        if phase == 0:
            lo = 0
            phase_hi = full_end
        else:
            lo = full_end
            phase_hi = hi
        for start_n in range(lo, phase_hi, BLOCK_N):
            dq = _dq_key_block(
                dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                start_n, offs_m, tl.arange(0, BLOCK_N), offs_dk, offs_dv, n_k, diag, qk_scale,
                CAUSAL, phase == 1, HEAD_DIM_QK, HEAD_DIM_V, BLOCK_DK, BLOCK_DV, DOT_PRECISION, UPCAST_DOT,
            )  # fmt: skip

    dq_base = DQ + off_b * stride_dqb + off_h * stride_dqh
    dq_ptrs = dq_base + offs_m[:, None] * stride_dqm + offs_dk[None, :] * stride_dqd
    # dS was taken w.r.t. the scaled scores, so dQ carries the scale.
    dq_mask = (offs_m[:, None] < n_q) & (offs_dk[None, :] < HEAD_DIM_QK)
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=dq_mask)


class KernelTiles(NamedTuple):
    """One backward kernel's launch: BLOCK_M queries × BLOCK_N keys per step, warps, stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def backward_block_config(
    head_dim_qk: int, head_dim_v: int, dtype: torch.dtype
) -> tuple[KernelTiles, KernelTiles]:
    """(dK/dV tiles, dQ tiles) for one backward, before any autotuning.

    Each program keeps its own rows (keys for dK/dV, queries for dQ) with fp32 accumulators of
    width D (two for dK/dV, one for dQ) and streams narrow blocks of the other side, so dK/dV
    takes tall key blocks × few queries and dQ the mirror image (as FlashAttention-2 and Triton's
    fused-attention tutorial). Chosen by compiling for sm_90 (causal, GQA 4): no register spills
    and shared memory within an H100's; the wider head dim picks the row. fp32 ("ieee") dots run
    on FMA units with operands in registers: small tiles. Not yet timed on a GPU. Interpreted:
    small, unequal tiles so the test shapes cross several block edges on both sides.
    """
    if is_interpreted():
        return KernelTiles(16, 32, 4, 1), KernelTiles(32, 16, 4, 1)
    block_d = triton.next_power_of_2(max(head_dim_qk, head_dim_v))
    if dtype == torch.float32:
        if block_d <= 64:
            return KernelTiles(32, 32, 8, 2), KernelTiles(64, 16, 8, 2)
        return KernelTiles(16, 32, 8, 1), KernelTiles(32, 16, 8, 1)
    if block_d <= 64:
        return KernelTiles(32, 128, 8, 3), KernelTiles(128, 32, 4, 3)
    if block_d <= 128:
        return KernelTiles(16, 128, 8, 3), KernelTiles(128, 32, 8, 3)
    return KernelTiles(32, 32, 8, 1), KernelTiles(64, 32, 8, 2)


def backward_launches(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
) -> list[Launch]:
    """The backward's three launches (preprocess, dK/dV, dQ) over validated tensors
    (`flash_attention_backward` checks them), with their fp32 scratch buffers delta and lse2
    [B, Hq, Nq] allocated on q's device."""
    batch, n_q_heads, n_q, head_dim_qk = q.shape
    n_kv_heads, n_k, head_dim_v = k.shape[1], k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(head_dim_qk) if scale is None else float(scale)
    delta = torch.empty(batch, n_q_heads, n_q, dtype=torch.float32, device=q.device)  # rowsum(dO ∘ O)
    lse2 = torch.empty_like(delta)  # lse · log2(e), +inf where lse = -inf
    dkdv_tiles, dq_tiles = backward_block_config(head_dim_qk, head_dim_v, q.dtype)
    shared = _gradient_constexprs(q, k, v, causal)
    # Both gradient kernels take q, k, v, dO, lse2 and delta first, then their outputs, then strides.
    inputs = (q, k, v, grad_out, lse2, delta)
    input_strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    dkdv = Launch(
        _attention_bwd_dkdv,
        (triton.cdiv(n_k, dkdv_tiles.block_n), batch * n_kv_heads),
        (*inputs, dk, dv, *input_strides, *dk.stride(), *dv.stride(),
         n_q_heads, n_kv_heads, n_q, n_k, scale * LOG2_E, scale),
        {"BLOCK_M": dkdv_tiles.block_m, "BLOCK_N": dkdv_tiles.block_n, **shared},
        dkdv_tiles.num_warps,
        dkdv_tiles.num_stages,
    )  # fmt: skip
    dq_launch = Launch(
        _attention_bwd_dq,
        (triton.cdiv(n_q, dq_tiles.block_m), batch * n_q_heads),
        (*inputs, dq, *input_strides, *dq.stride(), n_q_heads, n_q, n_k, scale * LOG2_E, scale),
        {"BLOCK_M": dq_tiles.block_m, "BLOCK_N": dq_tiles.block_n, **shared},
        dq_tiles.num_warps,
        dq_tiles.num_stages,
    )
    return [_preprocess_launch(grad_out, out, lse, delta, lse2), dkdv, dq_launch]


def _preprocess_launch(
    grad_out: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, delta: torch.Tensor, lse2: torch.Tensor
) -> Launch:
    """delta = rowsum(dO ∘ O) and lse2 = lse · log2(e) into the scratch rows [B, Hq, Nq]."""
    batch, n_q_heads, n_q, head_dim_v = out.shape
    block_m = 32 if is_interpreted() else 64
    return Launch(
        _attention_bwd_preprocess,
        (triton.cdiv(n_q, block_m), batch * n_q_heads),
        (out, grad_out, lse, delta, lse2, *out.stride(), *grad_out.stride(), *lse.stride(), n_q_heads, n_q),
        {"HEAD_DIM_V": head_dim_v, "BLOCK_M": block_m, "BLOCK_DV": triton.next_power_of_2(head_dim_v)},
        num_warps=4,
        num_stages=3,
    )


def _gradient_constexprs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> dict:
    """The compile-time constants the dK/dV and dQ kernels share (all but their tiles)."""
    head_dim_qk, head_dim_v = q.shape[3], v.shape[3]
    return {
        "GROUP": q.shape[1] // k.shape[1],
        "CAUSAL": bool(causal),
        "DOT_PRECISION": dot_precision(q.dtype),
        "UPCAST_DOT": upcast_dot(q.dtype),
        "HEAD_DIM_QK": head_dim_qk,
        "HEAD_DIM_V": head_dim_v,
        "BLOCK_DK": triton.next_power_of_2(head_dim_qk),
        "BLOCK_DV": triton.next_power_of_2(head_dim_v),
    }
