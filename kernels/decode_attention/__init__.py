"""Single-token decode attention over a ragged KV cache (split-KV flash-decoding): GQA/MQA, MLA
decode over a latent cache (Dk != Dv, V a view of K), and streaming heads (sliding window + sink)."""

from kernels.decode_attention.kernel import decode_attention
from kernels.decode_attention.kernel import default_num_splits as default_num_splits

# What `kernels` re-exports (kernels/_families.py): the entry point. Helpers such as
# default_num_splits are imported from the family itself.
__all__ = ["decode_attention"]
