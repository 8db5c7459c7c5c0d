"""Mixture-of-Head attention forward over only the (token, head) pairs each token routed to."""

from kernels.moh_attention.kernel import compact_active_tokens as compact_active_tokens
from kernels.moh_attention.kernel import moh_attention

# What `kernels` re-exports (kernels/_families.py): the entry point. Helpers such as
# compact_active_tokens are imported from the family itself.
__all__ = ["moh_attention"]
