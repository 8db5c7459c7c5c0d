"""Prefill / full-sequence attention (MHA, GQA, MQA; causal bottom-right; window + sink; cog), its
GQA-aware backward, and autograd through them."""

from kernels.flash_attention.backward import flash_attention_backward
from kernels.flash_attention.kernel import block_config, flash_attention

__all__ = ["block_config", "flash_attention", "flash_attention_backward"]
