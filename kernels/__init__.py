"""Triton attention kernels, functional: one folder per kernel family.

Each folder whose __init__.py defines __all__ is a family, found at import (kernels/_families.py);
the names in its __all__ (its entry points) become attributes of this package, e.g.
`kernels.flash_attention`. A new family needs no edit here.

Importing this package imports triton, so TRITON_INTERPRET must already be set when Triton is
to run in its CPU interpreter (see `is_interpreted`).
"""

from kernels._common import is_interpreted as is_interpreted
from kernels._families import exported_names, find_families

FAMILIES = find_families(__name__, __path__)
_ENTRY_POINTS = exported_names(FAMILIES)
# An entry point named like its folder (flash_attention) replaces the subpackage as an attribute of
# this package; the subpackage stays importable by its dotted name (sys.modules).
globals().update(_ENTRY_POINTS)

__all__ = sorted(["is_interpreted", *_ENTRY_POINTS])
