"""The `flex` backend's engine: FlexAttention (torch.nn.attention.flex_attention) under torch.compile.

Variants express their pattern as a block mask built here: causal (bottom-right), sink + window per KV
head (streaming heads), or key blocks chosen per query (MoBA), where the block mask lists only the
tiles that hold a chosen key, so Flex skips the others (real block sparsity, not a dense mask).

Compiling costs seconds (tens on a 2-core CPU) per shape, so it happens once per process and shape:
one compiled function, whose Dynamo cache keeps a graph per shape, and block masks cached per shape
(MoBA's choice depends on the data: its mask function is cached per shape and reads a buffer refilled
per call, so the compiled graph is reused).
"""

import functools
import math
from collections.abc import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from workloads.backends import Unsupported, choose_triton_mode

# Flex's sparse block (tile) size: its kernels skip whole tiles of TILE queries × TILE keys.
TILE = 128
# Graphs kept per compiled function before Dynamo gives up and runs flex_attention eagerly (the unfused
# math that materialises the scores): a sweep visits far more shapes than Dynamo's default of 8.
RECOMPILE_LIMIT = 1024

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@functools.cache
def compiled_flex() -> Callable[..., torch.Tensor]:
    """flex_attention under torch.compile, once per process (its cache holds one graph per shape)."""
    choose_triton_mode()  # before Inductor imports Triton
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT
    )
    return torch.compile(flex_attention, dynamic=False)


def flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: BlockMask | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v under `block_mask`: q [B, Hq, Nq, Dk], k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv]
    -> [B, Hq, Nq, Dv]. Grouped heads natively (enable_gqa: K/V are never repeated). What Flex cannot
    do on this device (a backward on the CPU, ...) raises `Unsupported` with PyTorch's reason."""
    try:
        return compiled_flex()(
            q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
    except NotImplementedError as exc:
        raise Unsupported(f"flex: {str(exc).strip().splitlines()[0]}") from None


@functools.cache
def _cached_block_mask(mask_mod: MaskMod, heads: int | None, n_q: int, n_k: int, device: str) -> BlockMask:
    return create_block_mask(mask_mod, None, heads, n_q, n_k, device=device, BLOCK_SIZE=TILE)


@functools.cache
def _causal_mod(offset: int) -> MaskMod:
    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset

    return causal


def causal_mask(n_q: int, n_k: int, device: torch.device) -> BlockMask:
    """Causal, aligned bottom-right (query i sees keys j <= i + Nk - Nq), cached per shape."""
    return _cached_block_mask(_causal_mod(n_k - n_q), None, n_q, n_k, str(device))


@functools.cache
def _streaming_mod(windows: tuple[int, ...], group: int, sink: int, offset: int, device: str) -> MaskMod:
    window_of_kv_head = torch.tensor(windows, device=device)  # [Hkv]

    def sink_and_window(b, h, q_idx, kv_idx):
        window = window_of_kv_head[h // group]
        position = q_idx + offset
        recent = kv_idx > position - window
        return (kv_idx <= position) & (recent | (kv_idx < sink) | (window <= 0))

    return sink_and_window


def streaming_mask(
    windows: tuple[int, ...], n_heads: int, sink: int, n_q: int, n_k: int, device: torch.device
) -> BlockMask:
    """Causal (bottom-right) with, for query head h, the window of its KV head h // (Hq / Hkv): the `sink`
    first keys and the `window` most recent ones (window <= 0: the whole past). Cached per shape."""
    group = n_heads // len(windows)
    mod = _streaming_mod(tuple(windows), group, sink, n_k - n_q, str(device))
    return _cached_block_mask(mod, n_heads, n_q, n_k, str(device))


@functools.cache
def _selection_buffer(shape: tuple[int, ...], block_size: int, offset: int, device: str):
    """(buffer [B, H, Nq, n_blocks] bool, mask_mod reading it) for one shape."""
    chosen = torch.zeros(shape, dtype=torch.bool, device=device)

    def chosen_blocks(b, h, q_idx, kv_idx):
        return chosen[b, h, q_idx, kv_idx // block_size] & (kv_idx <= q_idx + offset)

    return chosen, chosen_blocks


def selected_blocks_mask(selected: torch.Tensor, block_size: int, n_k: int) -> BlockMask:
    """Block mask of keys chosen per query in blocks of `block_size`, causally (bottom-right):
    selected [B, H, Nq, n_blocks] bool. Only the TILE × TILE tiles holding a chosen, visible key are
    listed, so Flex skips the rest; the mask function keeps exactly the chosen keys inside a tile."""
    batch, heads, n_q, n_blocks = selected.shape
    offset = n_k - n_q
    chosen, mask_mod = _selection_buffer(tuple(selected.shape), block_size, offset, str(selected.device))
    chosen.copy_(selected)
    n_q_tiles, n_k_tiles = math.ceil(n_q / TILE), math.ceil(n_k / TILE)
    keys = torch.arange(n_k, device=selected.device)
    # [n_blocks, n_k_tiles]: block m has a key in tile t
    overlap = torch.zeros(n_blocks, n_k_tiles, device=selected.device)
    overlap[keys // block_size, keys // TILE] = 1.0
    per_query = (selected.float() @ overlap) > 0  # [B, H, Nq, n_k_tiles]
    tile_start = torch.arange(n_k_tiles, device=selected.device) * TILE
    position = torch.arange(n_q, device=selected.device) + offset
    per_query &= tile_start[None, :] <= position[:, None]  # a tile wholly in a query's future holds no key
    padded = torch.nn.functional.pad(per_query, (0, 0, 0, n_q_tiles * TILE - n_q))
    listed = padded.view(batch, heads, n_q_tiles, TILE, n_k_tiles).any(dim=3)  # [B, H, nq_tiles, nk_tiles]
    kv_indices = torch.argsort((~listed).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    n_listed = listed.sum(-1, dtype=torch.int32)  # [B, H, nq_tiles]
    return BlockMask.from_kv_blocks(
        n_listed, kv_indices, BLOCK_SIZE=TILE, mask_mod=mask_mod, seq_lengths=(n_q, n_k)
    )


def dense_mask(block_mask: BlockMask, batch: int, heads: int) -> torch.Tensor:
    """What a block mask keeps, element by element: bool [B, H, Nq, Nk] (tests compare it with the
    variants' reference masks; O(Nq · Nk), never used by a benchmark)."""
    n_q, n_k = block_mask.seq_lengths
    q_tile, k_tile = block_mask.BLOCK_SIZE
    tiles = block_mask.to_dense().bool()  # [B|1, H|1, nq_tiles, nk_tiles]
    device = tiles.device
    b = torch.arange(batch, device=device)[:, None, None, None]
    h = torch.arange(heads, device=device)[None, :, None, None]
    q_idx = torch.arange(n_q, device=device)[None, None, :, None]
    kv_idx = torch.arange(n_k, device=device)[None, None, None, :]
    tile_rows = torch.arange(n_q, device=device) // q_tile
    tile_cols = torch.arange(n_k, device=device) // k_tile
    listed = tiles.expand(batch, heads, -1, -1)[:, :, tile_rows][..., tile_cols]  # [B, H, Nq, Nk]
    kept = block_mask.mask_mod(b, h, q_idx, kv_idx)
    return listed & kept.expand(batch, heads, n_q, n_k)
