"""MoBA prefill: causal self-attention over the key blocks a per-query gate selected (block-sparse)."""

from kernels.moba_attention.kernel import (
    TileBlockLists,
    block_config,
    causal_selection,
    moba_attention,
    tile_block_indices,
)

__all__ = ["TileBlockLists", "block_config", "causal_selection", "moba_attention", "tile_block_indices"]
