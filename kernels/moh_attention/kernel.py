"""Mixture-of-Head attention forward that computes only the (token, head) pairs a token routed to.

The host compacts, per (batch, query head), the positions of the tokens whose gate is nonzero
(in order, then the inactive ones after them) and counts them. One program per tile of BLOCK_M
entries of that list gathers its query rows, runs the FlashAttention key loop with each row's
true position in the causal mask (stopping at the tile's last active position), scales by the
gate and scatters the rows to o. Tiles past the count hold only inactive tokens: they write
zeros and exit, so o needs no separate zero fill.
"""

import math

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    Launch,
    check_devices,
    check_dim,
    check_qkv,
    check_rank,
    check_scale,
    dot,
    dot_precision,
    load_tile,
    online_softmax_update,
    output_buffer,
    upcast_dot,
)
from kernels.flash_attention.forward import block_config


@triton.jit
def _attend_key_block(
    acc, l_i, m_i, q,
    k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    start_n, query_pos, offs_n, offs_d, n_k, qk_scale,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Fold keys [start_n, start_n + BLOCK_N) into the running (acc, l_i, m_i) of one gathered tile.

    query_pos [BLOCK_M] is each row's key-space position (token index + Nk - Nq), not its place in
    the tile. MASKED blocks may run past n_k or cross some row's causal diagonal; unmasked ones are
    visible to every row, which saves the bounds checks and the compare-and-select.
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
            visible = visible & (offs_key[None, :] <= query_pos[:, None])  # [BLOCK_M, BLOCK_N]
        qk = tl.where(visible, qk, float("-inf"))
    return online_softmax_update(acc, l_i, m_i, qk, v, MASKED, DOT_PRECISION, UPCAST_DOT)


@triton.jit
def _store_rows(o_base, rows, offs_d, stride_om, stride_od, n_q, tile, HEAD_DIM: tl.constexpr):
    """Scatter tile [BLOCK_M, BLOCK_D] to o_base[rows, :HEAD_DIM], skipping rows >= n_q. The
    addresses are formed here, at the store, so no pointer tile stays live across the key loop."""
    ptrs = o_base + rows[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(ptrs, tile, mask=(rows[:, None] < n_q) & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def _moh_attention_fwd(
    Q, K, V, GATES, TOKEN_ORDER, N_ACTIVE, Out,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gm, stride_gh,
    stride_ob, stride_oh, stride_om, stride_od,
    n_q_heads, n_q, n_k, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    if CAUSAL:
        # Tiles past the count exit at once and the last active tile sees the most keys: running
        # the grid from its end starts the heaviest work first, so the tail is short.
        pid_m = tl.num_programs(0) - 1 - pid_m
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // n_q_heads).to(tl.int64)
    off_h = (pid_bh % n_q_heads).to(tl.int64)
    off_kv_h = off_h // GROUP  # GQA: query heads [g·GROUP, (g+1)·GROUP) share KV head g

    n_active = tl.load(N_ACTIVE + pid_bh)  # active tokens of this (batch, head)
    order_base = TOKEN_ORDER + pid_bh.to(tl.int64) * n_q  # [Nq] int32: active positions, then inactive
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # [BLOCK_M] indices into the compacted list
    # [BLOCK_M] token positions; padding past the list reads n_q, which every row mask drops.
    rows = tl.load(order_base + offs_m, mask=offs_m < n_q, other=n_q)
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D], padded past HEAD_DIM when it is not a power of two
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    if start_m >= n_active:
        zeros = tl.zeros([BLOCK_M, BLOCK_D], dtype=Out.dtype.element_ty)
        _store_rows(o_base, rows, offs_d, stride_om, stride_od, n_q, zeros, HEAD_DIM)
        return

    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # [BLOCK_M, BLOCK_D] gathered query rows
    q = load_tile(q_base, rows, offs_d, stride_qm, stride_qd, n_q, HEAD_DIM, BLOCK_D, True)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of scores (log2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running numerator · V

    # Bottom-right alignment: token i sits at key position i + Nk - Nq and sees keys up to it.
    diag = n_k - n_q
    query_pos = rows + diag  # [BLOCK_M]
    if CAUSAL:
        # The list is in position order, so the tile's first entry is its earliest active token
        # and its last active entry the latest: keys up to the first one's position are visible
        # to every active row, keys past the last one's to none, and those are never visited.
        first_pos = tl.load(order_base + start_m) + diag
        last_pos = tl.load(order_base + tl.minimum(start_m + BLOCK_M, n_active) - 1) + diag
        full_end = tl.minimum(tl.maximum(first_pos + 1, 0), n_k)
        hi = tl.minimum(tl.maximum(last_pos + 1, 0), n_k)
    else:
        full_end = n_k
        hi = n_k
    full_end = (full_end // BLOCK_N) * BLOCK_N

    # Inactive rows sharing the count's tile ride along (their keys are unchecked) and are dropped.
    for start_n in range(0, full_end, BLOCK_N):
        acc, l_i, m_i = _attend_key_block(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            start_n, query_pos, offs_n, offs_d, n_k, qk_scale,
            CAUSAL, False, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip
    for start_n in range(full_end, hi, BLOCK_N):
        acc, l_i, m_i = _attend_key_block(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            start_n, query_pos, offs_n, offs_d, n_k, qk_scale,
            CAUSAL, True, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip

    # Reloaded rather than kept: a gathered index vector held across the loop costs registers.
    rows = tl.load(order_base + offs_m, mask=offs_m < n_q, other=n_q)  # [BLOCK_M]
    # [BLOCK_M] gate of each row's token for this head, in fp32 whatever the caller's dtype.
    gate = tl.load(
        GATES + off_b * stride_gb + rows * stride_gm + off_h * stride_gh, mask=rows < n_q, other=0.0
    )
    # Rows that saw no key (causal with Nq > Nk) have l_i = 0 and acc = 0: they output zeros.
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None] * gate.to(tl.float32)[:, None]
    acc = tl.where((offs_m < n_active)[:, None], acc, 0.0)
    _store_rows(o_base, rows, offs_d, stride_om, stride_od, n_q, acc.to(Out.dtype.element_ty), HEAD_DIM)


GATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compact_active_tokens(gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (batch, head), the token positions whose gate is nonzero, in order, then the rest.

    gates [B, N, H] -> (token_order int32 [B, H, N], n_active int32 [B, H]): token_order[b, h, :c]
    with c = n_active[b, h] lists the active positions ascending, token_order[b, h, c:] the
    inactive ones ascending. A stable sort on the inactive flag does both in one pass.
    """
    inactive = (gates == 0).transpose(1, 2)  # [B, H, N]
    token_order = torch.argsort(inactive.to(torch.uint8), dim=-1, stable=True).to(torch.int32)
    n_active = inactive.shape[-1] - inactive.sum(dim=-1, dtype=torch.int32)
    return token_order.contiguous(), n_active.contiguous()


def moh_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: torch.Tensor,
    out: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
) -> Launch:
    """The launch over validated tensors (`moh_attention` checks them), with the active tokens
    compacted on q's device. Enough tiles for a head that every token picked; the active counts
    stay on the device."""
    batch, n_q_heads, n_q, head_dim = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    token_order, n_active = compact_active_tokens(gates)  # [B, H, Nq], [B, H]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    block_m, block_n, num_warps, num_stages = block_config(head_dim, q.dtype)
    args = (
        q, k, v, gates, token_order, n_active, out,
        *q.stride(), *k.stride(), *v.stride(), *gates.stride(), *out.stride(),
        n_q_heads, n_q, n_k, scale * LOG2_E,
    )  # fmt: skip
    constexprs = {
        "GROUP": n_q_heads // n_kv_heads,
        "HEAD_DIM": head_dim,
        "CAUSAL": bool(causal),
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_D": triton.next_power_of_2(head_dim),
        "DOT_PRECISION": dot_precision(q.dtype),
        "UPCAST_DOT": upcast_dot(q.dtype),
    }
    grid = (triton.cdiv(n_q, block_m), batch * n_q_heads)
    return Launch(_moh_attention_fwd, grid, args, constexprs, num_warps, num_stages)


def moh_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """o[b, h, i] = gates[b, i, h] · softmax(q[b, h, i] kᵀ · scale) v, computed only where the gate
    is nonzero and exactly 0 elsewhere; forward only.

    q [B, H, Nq, D]; k, v [B, Hkv, Nk, D] hold every token's keys and values (a causal LM caches
    all heads), H % Hkv == 0: query head h reads KV head h // (H // Hkv), never repeated in memory.
    gates [B, Nq, H] in float16, bfloat16, float32 or float64: the router's weight of head h for
    token i (shared heads and the top-k routed ones), 0 where the token did not pick the head.
    q, k, v share one dtype (float32, float16 or bfloat16); D in 16..256; any strides. `causal`
    aligns the mask bottom-right (query i sees key j iff j <= i + Nk - Nq; self-attention has
    Nq == Nk); a query that sees no key outputs zeros. `scale` defaults to 1/sqrt(D). `out`
    [B, H, Nq, D] (q's dtype and device), when given, is written whole and returned. Query rows
    of inactive pairs never reach the output: they may hold anything, NaN included.
    Returns o [B, H, Nq, D] in q's dtype.

    Cost: work ∝ the active (token, head) pairs. Each (batch, head) gathers its active tokens
    into tiles of BLOCK_M (`compact_active_tokens`, O(B·H·Nq) in PyTorch on the same device, no
    host sync), and a causal tile reads keys only up to its last active token: FLOPs are about
    4·D·Σ_active min(i + 1 + Nk - Nq, Nk) causal, 4·D·Nk·#active otherwise, plus the masked
    keys between a tile's first and last active token. An inactive pair costs one zero write.
    Each active tile reads its KV head's K/V once (heads of a GQA group have different active
    sets, so their tiles do not share loads).
    """
    device = _check_moh_inputs(q, k, v, gates, scale)
    out = output_buffer("moh_attention", out, tuple(q.shape), q.dtype, device)
    moh_launch(q, k, v, gates, out, causal=causal, scale=scale).run()
    return out


def _check_moh_inputs(q: object, k: object, v: object, gates: object, scale: object) -> torch.device:
    """moh_attention's arguments but `out` are well formed (else a ValueError says which is not);
    returns the inputs' device."""
    fn = "moh_attention"
    batch, n_q_heads, n_q = check_qkv(fn, q, k, v)[:3]
    check_rank(fn, "gates", gates, "[B, Nq, H]")
    check_dim(fn, "gates", "batch", gates.shape[0], "q", batch)
    check_dim(fn, "gates", "seq_len", gates.shape[1], "q", n_q)
    check_dim(fn, "gates", "heads", gates.shape[2], "q", n_q_heads)
    if gates.dtype not in GATE_DTYPES:
        supported = ", ".join(str(d).removeprefix("torch.") for d in GATE_DTYPES)
        raise ValueError(f"{fn}: gates has dtype {gates.dtype}, expected one of {supported}")
    device = check_devices(fn, {"q": q, "k": k, "v": v, "gates": gates})
    check_scale(fn, scale)
    return device
