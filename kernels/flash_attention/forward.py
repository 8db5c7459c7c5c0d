"""FlashAttention-2 style forward kernel and its launch: one program per (query block, batch · query
head), online softmax in fp32 over key blocks, GQA by index arithmetic (K/V are never repeated in
memory).

Beyond plain (causal) attention: separate query/key and value head dims (MLA prefill), a per-KV-head
sliding window with attention sinks (DuoAttention streaming heads; only the sink and window key
blocks are visited), Cog weighting (signed weights), and the log-sum-exp a backward pass needs.
The public entry point that checks inputs and runs this launch is `interface.flash_attention`."""

import math

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    Launch,
    batch_and_heads,
    causal_key_bounds,
    dot,
    dot_precision,
    is_interpreted,
    load_tile,
    upcast_dot,
)

LN_2 = tl.constexpr(0.6931471805599453)  # lse leaves the kernel in natural log: ln(x) = log2(x) · ln(2)


@triton.jit
def _attend_key_block(
    acc, l_i, m_i, q,
    k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    start_n, offs_m, offs_n, offs_dqk, offs_dv, n_k, diag, window, sink, qk_scale,
    CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, COG: tl.constexpr, MASKED: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, BLOCK_DQK: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Fold keys [start_n, start_n + BLOCK_N) into the running (acc, l_i, m_i) of one query block.

    MASKED blocks may run past n_k, cross the causal diagonal or the window's edge; unmasked ones
    are fully visible to every query row, which saves the bounds checks and the compare-and-select
    on most blocks. COG weights keys by sign(s) · exp(|s|): the running max and the denominator
    are taken over |s|, and the sign is applied to the numerator only.
    """
    offs_key = start_n + offs_n  # [BLOCK_N]
    k = load_tile(k_base, offs_key, offs_dqk, stride_kn, stride_kd, n_k, HEAD_DIM_QK, BLOCK_DQK, MASKED)
    v = load_tile(v_base, offs_key, offs_dv, stride_vn, stride_vd, n_k, HEAD_DIM_V, BLOCK_DV, MASKED)
    # Scores in the log2 domain: scale · log2(e) is folded into qk_scale so the weights use exp2.
    qk = dot(q, tl.trans(k), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_M, BLOCK_N]
    if COG:
        magnitude = tl.abs(qk)
    else:
        magnitude = qk
    if MASKED:
        visible = offs_key[None, :] < n_k  # [1, BLOCK_N]
        if CAUSAL:
            # Bottom-right alignment: query i sits at position i + (n_k - n_q) and sees keys up to it.
            query_pos = offs_m[:, None] + diag  # [BLOCK_M, 1]
            visible = visible & (offs_key[None, :] <= query_pos)  # [BLOCK_M, BLOCK_N]
            if WINDOWED:
                recent = offs_key[None, :] > query_pos - window
                visible = visible & (recent | (offs_key[None, :] < sink))
        magnitude = tl.where(visible, magnitude, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(magnitude, 1))  # [BLOCK_M]
    if MASKED:
        # A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
        m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new_safe = m_new
    p = tl.math.exp2(magnitude - m_new_safe[:, None])  # [BLOCK_M, BLOCK_N], 0 for hidden keys
    alpha = tl.math.exp2(m_i - m_new_safe)  # [BLOCK_M], 0 on the first visible block
    l_i = l_i * alpha + tl.sum(p, 1)
    if COG:
        p = tl.where(qk > 0, p, tl.where(qk < 0, -p, 0.0))  # sign(s), with sign(0) = 0
    acc = acc * alpha[:, None]
    acc = dot(p.to(v.dtype), v, acc, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_DV] fp32
    return acc, l_i, m_new


@triton.jit
def _flash_attention_fwd(
    Q, K, V, Out, Lse, Window,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm, stride_w,
    n_q_heads, n_q, n_k, sink, qk_scale,
    GROUP: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, COG: tl.constexpr,
    RETURN_LSE: tl.constexpr,
    HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    if CAUSAL:
        # The last query blocks see the most keys: launch them first so the grid's tail is short.
        pid_m = tl.num_programs(0) - 1 - pid_m
    off_b, off_h, off_kv_h = batch_and_heads(tl.program_id(1), n_q_heads, GROUP)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    # [BLOCK_DQK], [BLOCK_DV]: padded past the head dims when they are not powers of two
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # [BLOCK_M, BLOCK_DQK]
    q = load_tile(q_base, offs_m, offs_dqk, stride_qm, stride_qd, n_q, HEAD_DIM_QK, BLOCK_DQK, True)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of s (|s| for Cog), log2
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running denominator
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)  # running numerator · V

    diag = n_k - n_q
    first_pos = start_m + diag  # key position of the tile's first query row
    last_pos = tl.minimum(start_m + BLOCK_M, n_q) - 1 + diag  # ... and of its last real row
    # Causal: keys past last_pos are seen by no row of the tile, so about half the blocks are skipped.
    full_hi, hi = causal_key_bounds(first_pos, last_pos, n_k, CAUSAL, BLOCK_N)
    window = n_k
    full_lo = 0  # keys [full_lo, full_hi) are visible to every row of the tile: no mask
    masked_lo = full_hi  # without a window the masked blocks are the causal edge [full_hi, hi)
    masked_hi = hi
    if WINDOWED:
        # A window of n_k or more hides nothing (positions are < n_k), nor does one <= 0: both
        # become n_k, which also keeps position - window within int32.
        raw_window = tl.load(Window + off_kv_h * stride_w)
        windowed_head = (raw_window > 0) & (raw_window < n_k)
        window = tl.where(windowed_head, raw_window, n_k)
        # Sink keys [0, sink_end) in whole blocks (none for a retrieval head), then the recent
        # keys (first_pos - window, last_pos] from the block holding the first, minus any block
        # the sink already took; the keys between the two are seen by no row of the tile.
        sink_end = tl.where(windowed_head, tl.minimum(sink, hi), 0)
        sink_hi = tl.cdiv(sink_end, BLOCK_N) * BLOCK_N
        window_lo = tl.maximum((tl.maximum(first_pos - window + 1, 0) // BLOCK_N) * BLOCK_N, sink_hi)
        # Keys from last_pos - window + 1 on are inside every row's window.
        full_lo = tl.maximum(tl.cdiv(tl.maximum(last_pos - window + 1, 0), BLOCK_N) * BLOCK_N, window_lo)
        full_hi = tl.maximum(full_hi, full_lo)
        # The masked blocks [0, sink_hi), [window_lo, full_lo) and [full_hi, hi) run as one loop
        # over their concatenation [0, masked_hi); the loop jumps the gaps between them.
        leading_hi = sink_hi + full_lo - window_lo
        masked_lo = 0
        masked_hi = leading_hi + tl.maximum(hi - full_hi, 0)

    # One loop per kind of block (unrolled at compile time: unmasked, then masked), as in the
    # plain kernel: a third pipelined loop would cost registers (spills at 128×64 tiles on sm_90).
    for masked in tl.static_range(2):
        if masked:
            loop_lo, loop_hi = masked_lo, masked_hi
        else:
            loop_lo, loop_hi = full_lo, full_hi
        for start in range(loop_lo, loop_hi, BLOCK_N):
            start_n = start
            if WINDOWED and masked:
                # Jump the gaps: sink blocks, then the window's leading edge, then the causal edge.
                jump = tl.where(start < leading_hi, window_lo - sink_hi, full_hi - leading_hi)
                start_n = tl.where(start < sink_hi, start, start + jump)
            acc, l_i, m_i = _attend_key_block(
                acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                start_n, offs_m, offs_n, offs_dqk, offs_dv, n_k, diag, window, sink, qk_scale,
                CAUSAL, WINDOWED, COG, masked == 1, HEAD_DIM_QK, BLOCK_DQK, HEAD_DIM_V, BLOCK_DV,
                DOT_PRECISION, UPCAST_DOT,
            )  # fmt: skip

    # Rows that saw no key (causal with n_q > n_k) have l_i = 0 and acc = 0: they output zeros.
    row_in = offs_m < n_q  # [BLOCK_M]
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    acc = acc / l_safe[:, None]
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    o_ptrs = o_base + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_in[:, None] & (offs_dv[None, :] < HEAD_DIM_V))
    if RETURN_LSE:
        # Natural log: log(sum exp(s)) = (m + log2(l)) · ln(2), with m and l in the log2 domain.
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.log2(l_safe)) * LN_2)  # [BLOCK_M]
        lse_ptrs = Lse + off_b * stride_lb + off_h * stride_lh + offs_m * stride_lm
        tl.store(lse_ptrs, lse, mask=row_in)


def block_config(
    head_dim: int, dtype: torch.dtype, head_dim_v: int | None = None
) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for one launch, before any autotuning.

    Interpreted: small tiles keep the CPU interpreter fast and still cross several block edges at
    test sizes. On a GPU (checked by compiling for sm_90 with every window / Cog / lse variant: no
    register spills, shared memory within an H100's; not yet timed): 128×64 tiles for 2-byte types
    up to head dims of 128; 128×64 with 2 stages for MLA prefill's wide q·k and narrower v (d_qk up
    to 256, d_v up to 128, e.g. 192 / 128); 64×32 with 8 warps otherwise (256 / 256). fp32 with
    input_precision="ieee" runs its dots on FMA units, whose operands live in registers, so it
    takes small tiles. `head_dim_v` defaults to `head_dim`.
    """
    if is_interpreted():
        return 32, 16, 4, 1
    block_dqk = triton.next_power_of_2(head_dim)
    block_dv = triton.next_power_of_2(head_dim if head_dim_v is None else head_dim_v)
    block_d = max(block_dqk, block_dv)
    if dtype == torch.float32:
        return (64, 16, 8, 2) if block_d <= 64 else (32, 16, 8, 2)
    if block_d <= 64:
        return 128, 64, 4, 3
    if block_d <= 128:
        return 128, 64, 8, 3
    if block_dv <= 128:
        return 128, 64, 8, 2
    return 64, 32, 8, 2


def forward_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    window: torch.Tensor | None,
    *,
    causal: bool,
    scale: float | None,
    sink: int,
    weighting: str,
) -> Launch:
    """The forward's launch over validated tensors (`flash_attention` checks them): q, k, v as there,
    out [B, Hq, Nq, Dv], lse float32 [B, Hq, Nq] or None, window int32 [Hkv] or None (None when it
    hides no key: see `interface._window_per_kv_head`). One program per (query block, batch · query
    head)."""
    batch, n_q_heads, n_q, head_dim_qk = q.shape
    n_kv_heads, n_k, head_dim_v = k.shape[1], k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(head_dim_qk) if scale is None else float(scale)
    block_m, block_n, num_warps, num_stages = block_config(head_dim_qk, q.dtype, head_dim_v)
    # Without lse (or a window) the kernel never touches those pointers: `out` stands in.
    args = (
        q, k, v, out, out if lse is None else lse, out if window is None else window,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *((0, 0, 0) if lse is None else lse.stride()), 0 if window is None else window.stride(0),
        n_q_heads, n_q, n_k, min(sink, n_k), scale * LOG2_E,
    )  # fmt: skip
    constexprs = {
        "GROUP": n_q_heads // n_kv_heads,
        "CAUSAL": bool(causal),
        "WINDOWED": window is not None,
        "COG": weighting == "cog",
        "RETURN_LSE": lse is not None,
        "HEAD_DIM_QK": head_dim_qk,
        "HEAD_DIM_V": head_dim_v,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_DQK": triton.next_power_of_2(head_dim_qk),
        "BLOCK_DV": triton.next_power_of_2(head_dim_v),
        "DOT_PRECISION": dot_precision(q.dtype),
        "UPCAST_DOT": upcast_dot(q.dtype),
    }
    grid = (triton.cdiv(n_q, block_m), batch * n_q_heads)
    return Launch(_flash_attention_fwd, grid, args, constexprs, num_warps, num_stages)
