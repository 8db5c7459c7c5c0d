"""MoBA (Mixture of Block Attention) prefill forward: causal self-attention in which each query sees
only the key blocks its gate selected.

The gate (top-k blocks by ⟨q, mean(K_block)⟩, own block always, future blocks never) is the
caller's, given as a boolean block mask. On the host, each query tile's selections are merged into
compact sorted lists of key blocks, as FlexAttention's BlockMask does: full blocks (every query of
the tile selected them and sees all their keys) and partial ones. The kernel visits only those
blocks, in BLOCK_N sub-tiles, masks per query and per key in partial blocks only, and merges
with an online softmax in fp32.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels._common import (
    LOG2_E,
    Launch,
    batch_and_heads,
    check_devices,
    check_dim,
    check_qkv,
    check_rank,
    check_scale,
    dot,
    dot_precision,
    is_interpreted,
    load_tile,
    online_softmax_update,
    output_buffer,
    upcast_dot,
)


@triton.jit
def _attend_key_tile(
    acc, l_i, m_i, q,
    k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    start_n, offs_m, offs_n, offs_d, block_end, selected, qk_scale,
    BOUND_KEYS: tl.constexpr, PER_ROW: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """Fold keys [start_n, start_n + BLOCK_N) of one MoBA block into the running (acc, l_i, m_i).

    BOUND_KEYS: the sub-tile may run past block_end (the block's end, or the sequence's). PER_ROW:
    some rows did not select the block (`selected` [BLOCK_M] is False for them) or the sub-tile
    crosses the causal diagonal. With neither, every score is kept: no compare-and-select.
    """
    offs_key = start_n + offs_n  # [BLOCK_N]
    # [BLOCK_N, BLOCK_D] each; keys past block_end belong to the next block (or past the sequence).
    k = load_tile(k_base, offs_key, offs_d, stride_kn, stride_kd, block_end, HEAD_DIM, BLOCK_D, BOUND_KEYS)
    v = load_tile(v_base, offs_key, offs_d, stride_vn, stride_vd, block_end, HEAD_DIM, BLOCK_D, BOUND_KEYS)
    # Scores in the log2 domain: scale · log2(e) is folded into qk_scale so softmax uses exp2.
    qk = dot(q, tl.trans(k), None, DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_M, BLOCK_N]
    if PER_ROW:
        visible = (
            selected[:, None] & (offs_key[None, :] < block_end) & (offs_key[None, :] <= offs_m[:, None])
        )  # [BLOCK_M, BLOCK_N]
        qk = tl.where(visible, qk, float("-inf"))
    elif BOUND_KEYS:
        qk = tl.where(offs_key[None, :] < block_end, qk, float("-inf"))
    return online_softmax_update(acc, l_i, m_i, qk, v, BOUND_KEYS or PER_ROW, DOT_PRECISION, UPCAST_DOT)


@triton.jit
def _moba_attention_fwd(
    Q, K, V, SELECTED, FULL_NUM_BLOCKS, FULL_INDICES, PARTIAL_NUM_BLOCKS, PARTIAL_INDICES, Out,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_sb, stride_sh, stride_sj, stride_sm,
    stride_cb, stride_ch, stride_ct,
    stride_ib, stride_ih, stride_it, stride_ij,
    stride_ob, stride_oh, stride_om, stride_od,
    n_q_heads, seq_len, moba_block_size, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, SUB_TILES: tl.constexpr, EVEN_BLOCKS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    # Later query tiles tend to visit more blocks (more past to choose from): launch them first so
    # the grid's tail is short.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    off_b, off_h, off_kv_h = batch_and_heads(tl.program_id(1), n_q_heads, GROUP)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D], padded past HEAD_DIM when it is not a power of two
    rows_in = offs_m < seq_len  # [BLOCK_M]
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    # [BLOCK_M, BLOCK_D]
    q = load_tile(q_base, offs_m, offs_d, stride_qm, stride_qd, seq_len, HEAD_DIM, BLOCK_D, True)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of scores (log2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running numerator · V

    # Each list is walked as one flat loop over (block, sub-tile) steps rather than a loop per
    # block: compiled for sm_90 (bf16, D=128, 64×64 tiles), nested loops each carry their own
    # software-pipeline prologue and spill registers (255 + stack); the flat loops need 185.
    tile = off_b * stride_cb + off_h * stride_ch + pid_m * stride_ct
    list_base = off_b * stride_ib + off_h * stride_ih + pid_m * stride_it

    # Full blocks: complete, before the tile's first query, selected by every query of the tile.
    full_indices = FULL_INDICES + list_base
    for step in range(0, tl.load(FULL_NUM_BLOCKS + tile) * SUB_TILES):
        block_start = tl.load(full_indices + (step // SUB_TILES) * stride_ij) * moba_block_size
        acc, l_i, m_i = _attend_key_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            block_start + (step % SUB_TILES) * BLOCK_N, offs_m, offs_n, offs_d,
            block_start + moba_block_size, rows_in, qk_scale,
            not EVEN_BLOCKS, False, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip

    # Partial blocks: the rest of the tile's selections, masked per query and per key. Only the
    # last one (in ascending order) can hold keys past the tile's last query: its sub-tiles there
    # are seen by no query and not visited.
    partial_indices = PARTIAL_INDICES + list_base
    n_partial = tl.load(PARTIAL_NUM_BLOCKS + tile)
    last_start = tl.load(partial_indices + tl.maximum(n_partial - 1, 0) * stride_ij) * moba_block_size
    last_end = tl.minimum(tl.minimum(last_start + moba_block_size, seq_len), start_m + BLOCK_M)
    n_steps = tl.where(
        n_partial > 0, (n_partial - 1) * SUB_TILES + tl.cdiv(last_end - last_start, BLOCK_N), 0
    )
    selected_base = SELECTED + off_b * stride_sb + off_h * stride_sh + offs_m * stride_sm  # [BLOCK_M]
    for step in range(0, n_steps):
        block = tl.load(partial_indices + (step // SUB_TILES) * stride_ij)
        block_start = block * moba_block_size
        # [BLOCK_M] each query's own choice; a row past the sequence is never stored.
        selected = tl.load(selected_base + block * stride_sj, mask=rows_in, other=0) != 0
        acc, l_i, m_i = _attend_key_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            block_start + (step % SUB_TILES) * BLOCK_N, offs_m, offs_n, offs_d,
            tl.minimum(block_start + moba_block_size, seq_len), selected, qk_scale,
            True, True, HEAD_DIM, BLOCK_D, DOT_PRECISION, UPCAST_DOT,
        )  # fmt: skip

    # Rows that saw no key (no selected block at or before them) have l_i = 0, acc = 0: output zeros.
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_base = Out + off_b * stride_ob + off_h * stride_oh
    o_ptrs = o_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=rows_in[:, None] & (offs_d[None, :] < HEAD_DIM))


def block_config(head_dim: int, dtype: torch.dtype, block_size: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for one launch, before any autotuning.

    Sub-tiles never straddle two MoBA blocks (each starts at a block's first key), so BLOCK_N is
    capped at the largest power of two <= block_size (at least 16, tl.dot's minimum): a block of
    size S costs ceil(S / BLOCK_N) sub-tiles. A query tile visits the union of its rows'
    selections, so BLOCK_M is 64 rather than flash_attention's 128 for 2-byte types: more tiles,
    but fewer blocks that only some of a tile's rows selected. Checked by compiling for sm_90:
    K/V loads software-pipelined, no register spills, shared memory within an H100's. Interpreted:
    small tiles that cross several block edges at test sizes.
    """
    if is_interpreted():
        block_m, block_n, num_warps, num_stages = 32, 16, 4, 1
    elif dtype == torch.float32:
        # input_precision="ieee" runs on FMA units, whose operands live in registers: small tiles.
        block_m, block_n, num_warps, num_stages = (64, 16, 8, 2) if head_dim <= 64 else (32, 16, 8, 2)
    elif head_dim <= 128:
        block_m, block_n, num_warps, num_stages = 64, 64, 4, 3
    else:
        block_m, block_n, num_warps, num_stages = 64, 32, 8, 2
    block_n = min(block_n, max(16, 1 << (block_size.bit_length() - 1)))
    return block_m, block_n, num_warps, num_stages


class TileBlockLists(NamedTuple):
    """The key blocks each query tile visits, as compact lists (FlexAttention's BlockMask layout).

    T = ceil(N / BLOCK_M) tiles; each list row holds its count of block indices first, ascending,
    then padding. Full blocks lie wholly before the tile's first query and every query of the tile
    selected them (no mask needed); partial blocks are the tile's other selections.
    """

    kv_num_blocks: torch.Tensor  # int32 [B, H, T], partial blocks per tile
    kv_indices: torch.Tensor  # int32 [B, H, T, n_blocks]
    full_kv_num_blocks: torch.Tensor  # int32 [B, H, T], full blocks per tile
    full_kv_indices: torch.Tensor  # int32 [B, H, T, n_blocks]


def _compact(tile_blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, H, T, n_blocks] -> (counts int32 [B, H, T], indices int32 [B, H, T, n_blocks])."""
    counts = tile_blocks.sum(dim=-1, dtype=torch.int32)
    # A stable sort of "not in the tile" puts the tile's blocks first, in ascending order.
    indices = torch.sort((~tile_blocks).to(torch.uint8), dim=-1, stable=True).indices
    return counts, indices.to(torch.int32)


def causal_selection(block_mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """block_mask bool [B, H, N, n_blocks] without the blocks that start after their query, which
    hold no key it may see (a selected future block is dropped here, never visited)."""
    seq_len, n_blocks = block_mask.shape[2:]
    query_pos = torch.arange(seq_len, device=block_mask.device)  # [N]
    block_starts = torch.arange(n_blocks, device=block_mask.device) * block_size  # [n_blocks]
    return block_mask & (block_starts[None, :] <= query_pos[:, None])


def tile_block_indices(selection: torch.Tensor, block_size: int, block_m: int) -> TileBlockLists:
    """The blocks each tile of block_m queries visits, from a `causal_selection` [B, H, N, n_blocks].

    Memory and time O(B·H·N·n_blocks) on the device; never [N, N].
    """
    batch, heads, seq_len, n_blocks = selection.shape
    n_tiles = triton.cdiv(seq_len, block_m)
    pad_rows = (0, 0, 0, n_tiles * block_m - seq_len)
    tiled = (batch, heads, n_tiles, block_m, n_blocks)
    # Padding rows past the sequence select nothing for "any" and everything for "all".
    any_selected = F.pad(selection, pad_rows, value=False).reshape(tiled).any(dim=3)  # [B, H, T, n_blocks]
    all_selected = F.pad(selection, pad_rows, value=True).reshape(tiled).all(dim=3)
    tile_starts = torch.arange(n_tiles, device=selection.device) * block_m  # [T]
    block_ends = (torch.arange(n_blocks, device=selection.device) + 1) * block_size  # [n_blocks]
    # A complete block whose last key is at or before the tile's first query: every query sees all of it.
    before_tile = block_ends[None, :] <= tile_starts[:, None] + 1  # [T, n_blocks]
    full = all_selected & before_tile
    return TileBlockLists(*_compact(any_selected & ~full), *_compact(full))


def moba_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    out: torch.Tensor,
    *,
    block_size: int,
    scale: float | None,
) -> Launch:
    """The launch over validated tensors (`moba_attention` checks them), with the tiles' block lists
    built on q's device (`tile_block_indices`). One program per (query tile, batch · query head)."""
    batch, n_q_heads, seq_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    block_m, block_n, num_warps, num_stages = block_config(head_dim, q.dtype, block_size)
    selection = causal_selection(block_mask, block_size)  # [B, Hq, N, n_blocks]
    lists = tile_block_indices(selection, block_size, block_m)
    # [B, Hq, n_blocks, N] bytes: a tile reads its queries' choices of one block as one contiguous row.
    selection_rows = selection.transpose(2, 3).contiguous().view(torch.uint8)
    # The full and partial lists share one shape and layout (contiguous), hence one set of strides.
    args = (
        q, k, v, selection_rows, lists.full_kv_num_blocks, lists.full_kv_indices,
        lists.kv_num_blocks, lists.kv_indices, out,
        *q.stride(), *k.stride(), *v.stride(), *selection_rows.stride(),
        *lists.kv_num_blocks.stride(), *lists.kv_indices.stride(), *out.stride(),
        n_q_heads, seq_len, block_size, scale * LOG2_E,
    )  # fmt: skip
    constexprs = {
        "GROUP": n_q_heads // n_kv_heads,
        "HEAD_DIM": head_dim,
        "SUB_TILES": triton.cdiv(block_size, block_n),
        "EVEN_BLOCKS": block_size % block_n == 0,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_D": triton.next_power_of_2(head_dim),
        "DOT_PRECISION": dot_precision(q.dtype),
        "UPCAST_DOT": upcast_dot(q.dtype),
    }
    grid = (triton.cdiv(seq_len, block_m), batch * n_q_heads)
    return Launch(_moba_attention_fwd, grid, args, constexprs, num_warps, num_stages)


def moba_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    *,
    block_size: int,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal self-attention in which each query sees only the key blocks its gate selected.

    q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, D], Hq % Hkv == 0 (MHA, GQA, MQA): query head
    h reads KV head h // (Hq // Hkv), K/V never repeated. dtype float32, float16 or bfloat16 (all
    the same); D in 16..256; any strides. Keys are cut into blocks of `block_size` (>= 1; the last
    one may be short); block_mask bool [B, Hq, N, n_blocks] with n_blocks = ceil(N / block_size)
    (any strides, e.g. expanded over heads). Query (b, h, i) attends to key j iff
    block_mask[b, h, i, j // block_size] and j <= i; softmax runs over those keys only, and a query
    that sees no key outputs zeros. The MoBA gate (own block on, future blocks off, top-k by
    ⟨q, mean(K_block)⟩) is the caller's; selected future blocks are simply masked out.
    `scale` defaults to 1/sqrt(D). `out` [B, Hq, N, D] (q's dtype and device), when given, is
    written and returned. Returns o [B, Hq, N, D] in q's dtype.

    Cost: a query tile (BLOCK_M queries, see `block_config`) visits only the blocks that at least
    one of its queries selected, up to its last query (`tile_block_indices`): FLOPs and K/V reads
    ∝ Σ over tiles of their selected blocks' keys, e.g. about 4·B·Hq·N·top_k·block_size·D FLOPs
    when a tile's queries agree on their top_k blocks, against 2·B·Hq·N²·D for causal attention;
    the less a tile's queries agree, the more blocks its union holds. Full blocks skip the
    per-element masks. A block is cut into ceil(block_size / BLOCK_N) sub-tiles, so a block size
    that is not a multiple of BLOCK_N pads each block's last one (below 16, most of each
    sub-tile is padding). Host-side preparation: O(B·Hq·N·n_blocks) memory and time, never [N, N].
    """
    device = _check_moba_inputs(q, k, v, block_mask, block_size, scale)
    out = output_buffer("moba_attention", out, tuple(q.shape), q.dtype, device)
    moba_launch(q, k, v, block_mask, out, block_size=block_size, scale=scale).run()
    return out


def _check_moba_inputs(
    q: object, k: object, v: object, block_mask: object, block_size: object, scale: object
) -> torch.device:
    """moba_attention's arguments but `out` are well formed (else a ValueError says which is not);
    returns the inputs' device."""
    fn = "moba_attention"
    seq_len = check_qkv(fn, q, k, v, self_attention=True)[2]
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{fn}: block_size must be an int >= 1, got {block_size!r}")
    n_blocks = triton.cdiv(seq_len, block_size)
    check_rank(fn, "block_mask", block_mask, "[B, Hq, N, n_blocks]")
    if block_mask.dtype != torch.bool:
        raise ValueError(f"{fn}: block_mask has dtype {block_mask.dtype}, expected torch.bool")
    for dim_name, index in (("batch", 0), ("heads", 1), ("seq_len", 2)):
        check_dim(fn, "block_mask", dim_name, block_mask.shape[index], "q", q.shape[index])
    if block_mask.shape[3] != n_blocks:
        raise ValueError(
            f"{fn}: block_mask has {block_mask.shape[3]} blocks, expected ceil(N / block_size) = "
            f"ceil({seq_len} / {block_size}) = {n_blocks}"
        )
    device = check_devices(fn, {"q": q, "k": k, "v": v, "block_mask": block_mask})
    check_scale(fn, scale)
    return device
