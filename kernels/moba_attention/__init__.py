"""MoBA prefill: causal self-attention over the key blocks a per-query gate selected (block-sparse)."""

from kernels.moba_attention.kernel import TileBlockLists as TileBlockLists
from kernels.moba_attention.kernel import block_config as block_config
from kernels.moba_attention.kernel import causal_selection as causal_selection
from kernels.moba_attention.kernel import moba_attention
from kernels.moba_attention.kernel import tile_block_indices as tile_block_indices

# What `kernels` re-exports (kernels/_families.py): the entry point. Helpers such as block_config
# (flash_attention has one too) are imported from the family itself.
__all__ = ["moba_attention"]
