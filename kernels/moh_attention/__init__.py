"""Mixture-of-Head attention forward over only the (token, head) pairs each token routed to."""

from kernels.moh_attention.kernel import compact_active_tokens, moh_attention

__all__ = ["compact_active_tokens", "moh_attention"]
