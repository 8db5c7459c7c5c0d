"""MoBA prefill: causal self-attention over the key blocks a per-query gate selected (block-sparse)."""

from kernels.moba_attention.kernel import block_config, moba_attention, tile_block_indices

__all__ = ["block_config", "moba_attention", "tile_block_indices"]
