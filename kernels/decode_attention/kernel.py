"""Split-KV flash-decoding for one new token per sequence over a ragged KV cache.

Stage 1 runs one program per (batch · KV head, split, block of query heads): it attends up to
BLOCK_H query heads of its KV head together (one [BLOCK_H, Dk] tile, so each K/V element is read
once per head block; head blocks of one split are launched next to each other so that the ones
after the first find the cache in L2) over its slice of the cache and writes a normalised fp32
partial output and its log-sum-exp. Stage 2 merges the splits of each (batch, query head) with
those log-sum-exp weights.

MLA decode (weight absorption) runs as MQA with Dk = d_c + d_R and Dv = d_c over one latent
cache whose first d_c columns are V: when v_cache is that view of k_cache, the K tile's first
columns serve as the V tile, so the cache is read once. A Dk that is not a power of two is
processed as two column chunks (576 = 512 + 64) instead of being padded.

Streaming heads (DuoAttention) see only the first `sink` keys and the last `window` keys: the
visible keys of a sequence are numbered 0..n_visible-1 (sink part, then window part) and the
splits divide that numbering, so the middle of the cache is never read.
"""

import functools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    MIN_HEAD_DIM,
    Launch,
    check_devices,
    check_dim,
    check_float_dtypes,
    check_positive,
    check_rank,
    check_scale,
    check_window_sink,
    dot,
    dot_precision,
    is_interpreted,
    load_tile,
    online_softmax_update,
    output_buffer,
    upcast_dot,
)

MIN_BLOCKS_PER_SPLIT = 4
MAX_DEFAULT_SPLITS = 64
# MLA decode (DeepSeek-V2/V3): Dk = d_c + d_R = 512 + 64, Dv = d_c = 512.
MAX_HEAD_DIM_K, MAX_HEAD_DIM_V = 576, 512
# No window / one window for every KV head / a window per KV head (int32 tensor [Hkv]).
WINDOW_NONE, WINDOW_SCALAR, WINDOW_PER_HEAD = 0, 1, 2


@triton.jit
def _visible_keys(seq_len, window, sink, WINDOW_MODE: tl.constexpr):
    """(sink_end, window_start) of one sequence and KV head: keys [0, sink_end) and
    [window_start, seq_len) are visible, sink_end <= window_start, so none is counted twice."""
    if WINDOW_MODE == 0:
        return 0, 0
    else:
        window_start = tl.where(window > 0, tl.maximum(seq_len - window, 0), 0)
        sink_end = tl.minimum(sink, window_start)
        return sink_end, window_start


@triton.jit
def _decode_split_kv(
    Q, K, V, SEQLENS, WINDOWS, O_PART, LSE_PART,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_sb, stride_w,
    stride_pb, stride_ph, stride_ps, stride_pd,
    stride_lb, stride_lh, stride_ls,
    n_kv_heads, max_len, num_splits, window_size, sink, qk_scale,
    GROUP: tl.constexpr, HEAD_BLOCKS: tl.constexpr,
    HEAD_DIM_K: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr, BLOCK_DK_TAIL: tl.constexpr, BLOCK_DV: tl.constexpr,
    V_FROM_K: tl.constexpr, WINDOW_MODE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    # One flat grid, head block fastest, then split, then (batch, KV head): the head blocks that
    # read the same keys run side by side, and no grid axis limit (65535) applies.
    pid = tl.program_id(0)
    head_block = pid % HEAD_BLOCKS
    split = (pid // HEAD_BLOCKS) % num_splits
    pid_bg = pid // (HEAD_BLOCKS * num_splits)
    off_b = (pid_bg // n_kv_heads).to(tl.int64)
    off_kv_h = (pid_bg % n_kv_heads).to(tl.int64)

    # Lengths are clamped here rather than checked on the host, which would sync the device.
    seq_len = tl.minimum(tl.maximum(tl.load(SEQLENS + off_b * stride_sb), 0), max_len)
    if WINDOW_MODE == 2:
        window_size = tl.load(WINDOWS + off_kv_h * stride_w)
    sink_end, window_start = _visible_keys(seq_len, window_size, sink, WINDOW_MODE)
    # Visible key t (0-based, sink keys first) sits at cache row t, or t + gap past the sink.
    gap = window_start - sink_end
    n_visible = seq_len - gap
    # Each sequence divides its own visible keys, in whole key blocks, so ragged batches and
    # streaming heads stay balanced; trailing splits of a short sequence are empty.
    split_len = tl.cdiv(tl.cdiv(n_visible, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, n_visible)
    # Cache rows increase with t, so "t < end" is "row < row_end".
    row_end = tl.where(end < sink_end, end, end + gap)

    first_head = head_block * BLOCK_H
    offs_h = tl.arange(0, BLOCK_H)  # [BLOCK_H], query heads of this block, padded to >= 16 for tl.dot
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_dk = tl.arange(0, BLOCK_DK)  # [BLOCK_DK], the first (or only) column chunk of q and K
    offs_dv = tl.arange(0, BLOCK_DV)  # [BLOCK_DV], padded past HEAD_DIM_V when it is not a power of two
    heads = off_kv_h * GROUP + first_head + offs_h  # [BLOCK_H]
    heads_left = GROUP - first_head
    q_base = Q + off_b * stride_qb + (off_kv_h * GROUP + first_head) * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    if BLOCK_DK_TAIL > 0:
        # Dk = BLOCK_DK + (the rest, padded to BLOCK_DK_TAIL): two dots instead of one padded one.
        offs_dk_tail = tl.arange(0, BLOCK_DK_TAIL)  # [BLOCK_DK_TAIL]
        q_main = load_tile(
            q_base, offs_h, offs_dk, stride_qh, stride_qd, heads_left, BLOCK_DK, BLOCK_DK, True
        )
        q_tail = load_tile(
            q_base + BLOCK_DK * stride_qd, offs_h, offs_dk_tail, stride_qh, stride_qd, heads_left,
            HEAD_DIM_K - BLOCK_DK, BLOCK_DK_TAIL, True,
        )  # fmt: skip
    else:
        q_main = load_tile(
            q_base, offs_h, offs_dk, stride_qh, stride_qd, heads_left, HEAD_DIM_K, BLOCK_DK, True
        )  # [BLOCK_H, BLOCK_DK]

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)  # running max (log2 domain)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_H, BLOCK_DV], dtype=tl.float32)  # running numerator · V
    for start_n in range(start, end, BLOCK_N):
        rows = start_n + offs_n  # [BLOCK_N], visible-key numbers
        if WINDOW_MODE != 0:
            rows = tl.where(rows < sink_end, rows, rows + gap)  # cache rows
        if BLOCK_DK_TAIL > 0:
            k_main = load_tile(k_base, rows, offs_dk, stride_kn, stride_kd, row_end, BLOCK_DK, BLOCK_DK, True)
            k_tail = load_tile(
                k_base + BLOCK_DK * stride_kd, rows, offs_dk_tail, stride_kn, stride_kd, row_end,
                HEAD_DIM_K - BLOCK_DK, BLOCK_DK_TAIL, True,
            )  # fmt: skip
            qk = dot(q_main, tl.trans(k_main), None, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_H, BLOCK_N]
            qk = dot(q_tail, tl.trans(k_tail), qk, DOT_PRECISION, UPCAST_DOT)
        else:
            # [BLOCK_N, BLOCK_DK]
            k_main = load_tile(
                k_base, rows, offs_dk, stride_kn, stride_kd, row_end, HEAD_DIM_K, BLOCK_DK, True
            )
            qk = dot(q_main, tl.trans(k_main), None, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_H, BLOCK_N]
        if V_FROM_K:
            # V is the first HEAD_DIM_V columns of K (MLA's latent): reuse the tile; its columns
            # past HEAD_DIM_V only reach accumulator columns that are never stored.
            v = k_main
        else:
            # [BLOCK_N, BLOCK_DV]
            v = load_tile(v_base, rows, offs_dv, stride_vn, stride_vd, row_end, HEAD_DIM_V, BLOCK_DV, True)
        qk = tl.where(rows[None, :] < row_end, qk * qk_scale, float("-inf"))
        # Every visited block holds a visible key (start_n < end), so no row is all -inf: unmasked.
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, qk, v, False, DOT_PRECISION, UPCAST_DOT)

    # An empty split leaves m_i = -inf and l_i = 0: lse = -inf (weight 0 in stage 2), output 0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    lse = m_i + tl.log2(l_safe)  # [BLOCK_H], log2 domain
    acc = acc / l_safe[:, None]
    part_ptrs = (
        O_PART
        + off_b * stride_pb
        + heads[:, None] * stride_ph
        + split * stride_ps
        + offs_dv[None, :] * stride_pd
    )
    row_in = offs_h < heads_left
    tl.store(part_ptrs, acc, mask=row_in[:, None] & (offs_dv[None, :] < HEAD_DIM_V))
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


def head_dim_chunks(head_dim: int) -> tuple[int, int]:
    """(BLOCK_DK, BLOCK_DK_TAIL): the column chunks q and K are read in; tail 0 means one chunk.

    A power of two is one chunk. Otherwise the largest power of two below head_dim plus the rest
    padded to a power of two (>= 16, tl.dot's minimum), when that is narrower than padding the
    whole: 576 -> 512 + 64, 80 -> 64 + 16, but 24 -> 32 and 200 -> 256.
    """
    padded = triton.next_power_of_2(head_dim)
    if padded == head_dim:
        return head_dim, 0
    main = padded // 2
    tail = max(MIN_HEAD_DIM, triton.next_power_of_2(head_dim - main))
    if main + tail >= padded:
        return padded, 0
    return main, tail


def block_config(group: int, block_dk: int, block_dv: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_H, BLOCK_N, num_warps, num_stages) for stage 1, before any autotuning.

    block_dk is the width of q's column chunks together. BLOCK_H holds the query heads of one KV
    head, padded to tl.dot's minimum of 16 rows, and halved until the q and accumulator tiles fit
    what compiled for sm_90 without register spills (ptxas -v): BLOCK_H · (block_dk + block_dv)
    up to 128 · (256 + 256) in 2-byte types and 32 · (128 + 128) in fp32, and a 512-wide
    accumulator for at most 32 heads (64 · (256 + 512) spills), so MLA's 128 heads at 576 + 512
    run as 4 blocks of 32. Decode is bandwidth-bound: 64-key blocks with 3 loads in flight for
    2-byte types up to head_dim 128, 32-key blocks with 2 beyond, so K/V stages fit in shared
    memory; a tall or wide tile gets 8 warps so its fp32 accumulator stays in registers. fp32
    ("ieee") dots run on FMA units and take 16-key blocks. Interpreted: 16 heads and 16 keys per
    block, so the interpreter's small tests cross head and key blocks.
    """
    if is_interpreted():
        return 16, 16, 4, 1
    max_tile = 8192 if dtype == torch.float32 else 65536
    max_heads = 32 if block_dv >= 512 else 128
    block_h = max(16, triton.next_power_of_2(group))
    while block_h > 16 and (block_h > max_heads or block_h * (block_dk + block_dv) > max_tile):
        block_h //= 2
    num_warps = 8 if block_h * block_dv > 32 * 128 else 4
    if dtype == torch.float32:
        return block_h, 16, 8 if block_h * block_dv > 16 * 128 else 4, 2
    if max(block_dk, block_dv) <= 128:
        return block_h, 64, num_warps, 3
    return block_h, 32, num_warps, 2


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(programs_per_split: int, max_len: int, block_n: int, num_sms: int) -> int:
    """Splits per sequence so that the stage-1 grid fills the device.

    Stage 1 has programs_per_split · splits programs (B · Hkv · head blocks per split); aim for
    about two programs per SM, but give each split at least MIN_BLOCKS_PER_SPLIT key blocks of the
    longest possible visible range (max_len), so that the extra partial writes and the combine
    stay small next to the cache reads.
    """
    if programs_per_split >= num_sms:
        return 1
    wanted = triton.cdiv(2 * num_sms, programs_per_split)
    useful = max(1, triton.cdiv(max_len, block_n) // MIN_BLOCKS_PER_SPLIT)
    return max(1, min(wanted, useful, MAX_DEFAULT_SPLITS))


def _check_head_dim(fn: str, name: str, head_dim: int, max_head_dim: int) -> None:
    if not MIN_HEAD_DIM <= head_dim <= max_head_dim:
        raise ValueError(
            f"{fn}: {name} head_dim {head_dim} is outside the supported {MIN_HEAD_DIM}..{max_head_dim}"
        )


def _window_mode(window: int | torch.Tensor | None) -> int:
    """WINDOW_NONE, WINDOW_SCALAR or WINDOW_PER_HEAD for a window `check_window_sink` accepted."""
    if isinstance(window, torch.Tensor):
        return WINDOW_PER_HEAD
    return WINDOW_SCALAR if window is not None and window > 0 else WINDOW_NONE


class DecodeTiles(NamedTuple):
    """How stage 1 cuts its work: column chunks of q and K (see `head_dim_chunks`), V's padded
    width, BLOCK_H query heads × BLOCK_N keys per step, warps, stages, and head blocks per KV head."""

    block_dk: int
    block_dk_tail: int
    block_dv: int
    block_h: int
    block_n: int
    num_warps: int
    num_stages: int
    head_blocks: int


def decode_tiles(group: int, head_dim_k: int, head_dim_v: int, dtype: torch.dtype) -> DecodeTiles:
    """Stage 1's tiles for `group` query heads per KV head (`block_config` picks them)."""
    block_dk, block_dk_tail = head_dim_chunks(head_dim_k)
    block_dv = triton.next_power_of_2(head_dim_v)
    block_h, block_n, num_warps, num_stages = block_config(group, block_dk + block_dk_tail, block_dv, dtype)
    head_blocks = triton.cdiv(group, block_h)
    return DecodeTiles(
        block_dk, block_dk_tail, block_dv, block_h, block_n, num_warps, num_stages, head_blocks
    )


def decode_launches(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    window: int | torch.Tensor | None,
    out: torch.Tensor,
    *,
    scale: float | None,
    sink: int,
    num_splits: int | None,
    v_from_k: bool,
    num_sms: int,
) -> list[Launch]:
    """Stage 1 (split-KV attention) and stage 2 (combine) over validated tensors (`decode_attention`
    checks them), with the fp32 partial outputs and log-sum-exps allocated on q's device.

    v_from_k: v_cache is k_cache's first Dv columns (same storage and strides), told by the caller
    since only it can see the storage; it takes effect when Dv and Dk read as the same column chunk.
    num_sms: the device's SM count, from which the default split count fills the grid.
    """
    batch, n_q_heads, head_dim_k = q.shape
    n_kv_heads, max_len, head_dim_v = k_cache.shape[1], k_cache.shape[2], v_cache.shape[3]
    tiles = decode_tiles(n_q_heads // n_kv_heads, head_dim_k, head_dim_v, q.dtype)
    window_mode = _window_mode(window)
    # Beyond L_max a window or sink changes nothing; clamping keeps both within int32.
    sink = min(sink, max_len)
    window_size = min(window, max_len) if window_mode == WINDOW_SCALAR else 0
    if num_splits is None:
        # The longest visible range known on the host; a per-head window may include retrieval heads.
        max_visible = min(max_len, sink + window_size) if window_mode == WINDOW_SCALAR else max_len
        programs_per_split = batch * n_kv_heads * tiles.head_blocks
        num_splits = default_num_splits(programs_per_split, max_visible, tiles.block_n, num_sms)
    out_part = torch.empty(batch, n_q_heads, num_splits, head_dim_v, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(batch, n_q_heads, num_splits, dtype=torch.float32, device=q.device)
    split_kv = _split_kv_launch(
        q, k_cache, v_cache, cache_seqlens, window, out_part, lse_part, tiles,
        window_mode=window_mode, window_size=window_size, sink=sink, scale=scale, v_from_k=v_from_k,
    )  # fmt: skip
    return [split_kv, _combine_launch(out_part, lse_part, out, tiles.block_dv)]


def _split_kv_launch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    window: int | torch.Tensor | None,
    out_part: torch.Tensor,
    lse_part: torch.Tensor,
    tiles: DecodeTiles,
    *,
    window_mode: int,
    window_size: int,
    sink: int,
    scale: float | None,
    v_from_k: bool,
) -> Launch:
    """Stage 1: one program per (batch · KV head, split, head block), into out_part
    [B, Hq, splits, Dv] and lse_part [B, Hq, splits] (fp32)."""
    batch, n_q_heads, head_dim_k = q.shape
    n_kv_heads, max_len, head_dim_v = k_cache.shape[1], k_cache.shape[2], v_cache.shape[3]
    num_splits = out_part.shape[2]
    scale = 1.0 / math.sqrt(head_dim_k) if scale is None else float(scale)
    windows = window if window_mode == WINDOW_PER_HEAD else cache_seqlens  # a placeholder when unread
    args = (
        q, k_cache, v_cache, cache_seqlens, windows, out_part, lse_part,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), cache_seqlens.stride(0), windows.stride(0),
        *out_part.stride(), *lse_part.stride(),
        n_kv_heads, max_len, num_splits, window_size, sink, scale * LOG2_E,
    )  # fmt: skip
    constexprs = {
        "GROUP": n_q_heads // n_kv_heads,
        "HEAD_BLOCKS": tiles.head_blocks,
        "HEAD_DIM_K": head_dim_k,
        "HEAD_DIM_V": head_dim_v,
        "BLOCK_H": tiles.block_h,
        "BLOCK_N": tiles.block_n,
        "BLOCK_DK": tiles.block_dk,
        "BLOCK_DK_TAIL": tiles.block_dk_tail,
        "BLOCK_DV": tiles.block_dv,
        "V_FROM_K": v_from_k and tiles.block_dv == tiles.block_dk,
        "WINDOW_MODE": window_mode,
        "DOT_PRECISION": dot_precision(q.dtype),
        "UPCAST_DOT": upcast_dot(q.dtype),
    }
    grid = (batch * n_kv_heads * num_splits * tiles.head_blocks,)
    return Launch(_decode_split_kv, grid, args, constexprs, tiles.num_warps, tiles.num_stages)


def _combine_launch(
    out_part: torch.Tensor, lse_part: torch.Tensor, out: torch.Tensor, block_dv: int
) -> Launch:
    """Stage 2: one program per (batch, query head) merges its splits into out [B, Hq, Dv]."""
    batch, n_q_heads, num_splits, head_dim_v = out_part.shape
    args = (out_part, lse_part, out, *out_part.stride(), *lse_part.stride(), *out.stride(), num_splits)
    constexprs = {
        "HEAD_DIM": head_dim_v,
        "BLOCK_S": min(triton.next_power_of_2(num_splits), 16),
        "BLOCK_D": block_dv,
    }
    num_warps = 4 if block_dv >= 128 else 2
    return Launch(_decode_combine_splits, (batch, n_q_heads), args, constexprs, num_warps, num_stages=3)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    scale: float | None = None,
    window: int | torch.Tensor | None = None,
    sink: int = 0,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over the visible part of its cached keys.

    q [B, Hq, Dk]; k_cache [B, Hkv, L_max, Dk]; v_cache [B, Hkv, L_max, Dv], Hq % Hkv == 0 (query
    head h reads KV head h // (Hq // Hkv)); cache_seqlens int32 [B], each in 0..L_max (larger
    values are clamped to L_max; a sequence that sees no key gives a zero output). dtype float32,
    float16 or bfloat16 (all the same), Dk in 16..576, Dv in 16..512, any strides: v_cache may be
    a view of k_cache's first Dv columns (MLA decode: q [B, H, d_c + d_R], k_cache the latent cache
    [B, 1, L, d_c + d_R], v_cache = k_cache[..., :d_c]), which is then read once. `scale` defaults
    to 1/sqrt(Dk) (MLA wants 1/sqrt(d_h + d_R): pass it).

    Sequence b of length L sees key j iff j < L and, for a KV head whose window W > 0 (a streaming
    head), j >= L - W or j < sink; a head with W <= 0 (a retrieval head) sees its whole cache.
    `window` is None (no window), an int (every KV head) or an int32 tensor [Hkv] on q's device;
    `sink` (int >= 0) applies to streaming heads only. Only visible keys are read.

    `num_splits` (>= 1) is the number of slices of each sequence's visible keys reduced in
    parallel; None picks one from the programs per split, the longest possible visible range and
    the SM count (`default_num_splits`) without reading cache_seqlens or window on the host.
    `out` [B, Hq, Dv] (q's dtype and device), when given, is written and returned.
    Returns o [B, Hq, Dv] in q's dtype.
    """
    device = _check_decode_inputs(q, k_cache, v_cache, cache_seqlens)
    _check_decode_options(scale, window, sink, num_splits, n_kv_heads=k_cache.shape[1], device=device)
    out = output_buffer("decode_attention", out, (*q.shape[:2], v_cache.shape[3]), q.dtype, device)
    v_from_k = (
        v_cache.data_ptr() == k_cache.data_ptr()
        and v_cache.stride() == k_cache.stride()
        and v_cache.shape[3] <= k_cache.shape[3]
    )
    num_sms = 1 if is_interpreted() else _sm_count(device.index if device.index is not None else 0)
    launches = decode_launches(
        q, k_cache, v_cache, cache_seqlens, window, out,
        scale=scale, sink=sink, num_splits=num_splits, v_from_k=v_from_k, num_sms=num_sms,
    )  # fmt: skip
    for launch in launches:
        launch.run()
    return out


def _check_decode_inputs(q: object, k_cache: object, v_cache: object, cache_seqlens: object) -> torch.device:
    """decode_attention's tensors are well formed (else a ValueError says which is not): ranks,
    matching dims, non-empty, head dims, dtypes, one device, which is returned."""
    fn = "decode_attention"
    check_rank(fn, "q", q, "[B, Hq, Dk]")
    check_rank(fn, "k_cache", k_cache, "[B, Hkv, L_max, Dk]")
    check_rank(fn, "v_cache", v_cache, "[B, Hkv, L_max, Dv]")
    check_rank(fn, "cache_seqlens", cache_seqlens, "[B]")
    batch, n_q_heads, head_dim_k = q.shape
    n_kv_heads, max_len = k_cache.shape[1], k_cache.shape[2]
    for name, tensor in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_dim(fn, name, "batch", tensor.shape[0], "q", batch)
    check_dim(fn, "k_cache", "head_dim", k_cache.shape[3], "q", head_dim_k)
    check_dim(fn, "v_cache", "heads", v_cache.shape[1], "k_cache", n_kv_heads)
    check_dim(fn, "v_cache", "L_max", v_cache.shape[2], "k_cache", max_len)
    check_dim(fn, "cache_seqlens", "batch", cache_seqlens.shape[0], "q", batch)
    check_positive(fn, "q", q.shape, {"batch": 0, "heads": 1})
    check_positive(fn, "k_cache", k_cache.shape, {"heads": 1, "L_max": 2})
    if n_q_heads % n_kv_heads:
        raise ValueError(
            f"{fn}: q has {n_q_heads} heads, not a multiple of the {n_kv_heads} heads of k_cache and v_cache"
        )
    _check_head_dim(fn, "q", head_dim_k, MAX_HEAD_DIM_K)
    _check_head_dim(fn, "v_cache", v_cache.shape[3], MAX_HEAD_DIM_V)
    check_float_dtypes(fn, {"q": q, "k_cache": k_cache, "v_cache": v_cache})
    if cache_seqlens.dtype != torch.int32:
        raise ValueError(f"{fn}: cache_seqlens has dtype {cache_seqlens.dtype}, expected torch.int32")
    tensors = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "cache_seqlens": cache_seqlens}
    return check_devices(fn, tensors)


def _check_decode_options(
    scale: object, window: object, sink: object, num_splits: object, *, n_kv_heads: int, device: torch.device
) -> None:
    """decode_attention's keyword arguments but `out` are well formed (else a ValueError)."""
    fn = "decode_attention"
    check_scale(fn, scale)
    check_window_sink(fn, window, sink, n_kv_heads, "k_cache", device)
    if num_splits is not None and (
        isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1
    ):
        raise ValueError(f"{fn}: num_splits must be an int >= 1 or None, got {num_splits!r}")
