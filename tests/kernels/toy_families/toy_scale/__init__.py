"""A test-only kernel family (never shipped): out = x · factor over a 1-D tensor, in one tiny Triton
kernel. It lives outside kernels/ on purpose: tests/kernels/test_package.py adds this folder's parent
to the kernels package's search path and shows that the family is found and exported as
`kernels.toy_scale` without any edit of kernels/__init__.py."""

import torch
import triton
import triton.language as tl

BLOCK = 16


@triton.jit
def _scale(X, Out, n, factor, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    in_range = offs < n
    tl.store(Out + offs, tl.load(X + offs, mask=in_range) * factor, mask=in_range)


def toy_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x · factor for a contiguous 1-D float tensor x [N]; N need not be a multiple of BLOCK."""
    out = torch.empty_like(x)
    _scale[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), factor, BLOCK=BLOCK)
    return out


__all__ = ["toy_scale"]
