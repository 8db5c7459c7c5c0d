"""Prefill / full-sequence attention forward (MHA, GQA, MQA; causal bottom-right)."""

from kernels.flash_attention.kernel import block_config, flash_attention

__all__ = ["block_config", "flash_attention"]
