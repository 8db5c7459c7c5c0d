"""Single-token decode attention over a ragged KV cache (split-KV flash-decoding)."""

from kernels.decode_attention.kernel import decode_attention, default_num_splits

__all__ = ["decode_attention", "default_num_splits"]
