"""Single-token decode attention over a ragged KV cache (split-KV flash-decoding): GQA/MQA, MLA
decode over a latent cache (Dk != Dv, V a view of K), and streaming heads (sliding window + sink)."""

from kernels.decode_attention.kernel import decode_attention, default_num_splits

__all__ = ["decode_attention", "default_num_splits"]
