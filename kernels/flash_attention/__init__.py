"""Prefill / full-sequence attention (MHA, GQA, MQA; causal bottom-right; window + sink; cog), its
GQA-aware backward, and autograd through them.

forward.py: the forward kernel and `forward_launch`; backward.py: the backward kernels and
`backward_launches`; interface.py: the public functions over both (checks, outputs, autograd).
"""

from kernels.flash_attention.forward import block_config as block_config
from kernels.flash_attention.interface import (
    flash_attention,
    flash_attention_backward,
    flash_attention_with_grad,
)

# What `kernels` re-exports (kernels/_families.py): the entry points. Tuning helpers such as
# block_config are imported from the family itself, so two families may each have one.
__all__ = ["flash_attention", "flash_attention_backward", "flash_attention_with_grad"]
