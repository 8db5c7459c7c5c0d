"""Backends: how a variant's forward is executed. Names are data; each variant maps (backend, phase)
to its own implementation.

The `triton` backend imports `kernels` lazily through `load_kernels`: Triton must learn whether to
run in its CPU interpreter before it is first imported, and the driver never imports it.
"""

import importlib.util
import os
from importlib.metadata import version
from types import ModuleType

import torch

BACKENDS = {
    "torch-ref": "plain matmul + softmax in PyTorch (materialises the score matrix)",
    "torch-sdpa": "torch.nn.functional.scaled_dot_product_attention (enable_gqa)",
    "triton": "attnsweep's Triton kernels (compiled on a GPU, interpreted on a CPU)",
}

# Head dims (d_qk, d_v) the Triton kernels accept, per phase: (min, max d_qk, max d_v). They mirror the
# kernels' own checks (kernels/_common.py, kernels/decode_attention), which a test holds them to; kept
# here so that the driver can tell `unsupported` from a failure without importing Triton.
TRITON_HEAD_DIMS = {"prefill": (16, 256, 256), "train": (16, 256, 256), "decode": (16, 576, 512)}


def load_kernels() -> ModuleType:
    """`kernels`, with Triton's CPU interpreter switched on first when there is no GPU."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import kernels  # here, not at the top: Triton reads TRITON_INTERPRET once, when first imported

    return kernels


def triton_version() -> str:
    if importlib.util.find_spec("triton") is None:
        return ""
    return version("triton")
