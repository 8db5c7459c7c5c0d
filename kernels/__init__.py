"""Triton attention kernels, functional: one folder per kernel family.

Importing this package imports triton, so TRITON_INTERPRET must already be set when Triton is
to run in its CPU interpreter (see `is_interpreted`).
"""

from kernels._common import is_interpreted
from kernels.decode_attention import decode_attention
from kernels.flash_attention import flash_attention
from kernels.moba_attention import moba_attention
from kernels.moh_attention import moh_attention

__all__ = ["decode_attention", "flash_attention", "is_interpreted", "moba_attention", "moh_attention"]
