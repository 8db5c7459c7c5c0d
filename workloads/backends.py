"""Backends: how a variant's forward is executed. The registry is data: one `Backend` per name.

A backend runs an *implementation* of the variant: the variant's own (`implementations[(name, phase)]`
in its file: torch-ref, torch-sdpa, flex, triton), the one it pins to a single kernel (the sdpa-*
backends run the variant's torch-sdpa implementation under `torch.nn.attention.sdpa_kernel`), or, for
a backend of your own (a plugin), the backend's `implementations[(variant, phase)]`.

The `triton` backend imports `kernels` lazily through `load_kernels`: Triton must learn whether to
run in its CPU interpreter before it is first imported, and the driver never imports it.
"""

import contextlib
import importlib.util
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from types import ModuleType
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# (trial, inputs) -> output; the same signature as a variant's implementations (variants/base.py).
BackendCall = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


class Unsupported(Exception):
    """Raised by a backend that refuses a point it can only judge by running it (a pinned SDPA kernel
    that rejects the dtype, head dim, mask or device; Flex without a backward on this device): the
    trial's row is `unsupported` with this message, never `error`."""


@dataclass(frozen=True)
class Backend:
    """name: what sweeps and rows call it; description: one line for the README and the schema.

    implementation: the key of the variant implementation it runs (default: its own name);
    sdpa_kernel: the SDPBackend member it pins that implementation to ("" for none);
    vendor: shipped with PyTorch, so a candidate of the `best` report baseline;
    implementations / trains: a plugin's own code per (variant, phase), and whether autograd through
    it gives the train phase (variants' own implementations declare that in `train_backends`).
    """

    name: str
    description: str
    implementation: str = ""
    sdpa_kernel: str = ""
    vendor: bool = False
    implementations: Mapping[tuple[str, str], BackendCall] = field(default_factory=dict)
    trains: bool = False

    def __post_init__(self) -> None:
        if not self.implementation:
            object.__setattr__(self, "implementation", self.name)

    def call(self, implementation: BackendCall, trial: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.sdpa_kernel:
            return implementation(trial, inputs)
        try:
            with sdpa_kernel(getattr(SDPBackend, self.sdpa_kernel)):
                return implementation(trial, inputs)
        except RuntimeError as exc:
            if not is_sdpa_refusal(exc):
                raise
            reason = self.refusal_reason(implementation, trial, inputs, exc)
            raise Unsupported(f"{self.name}: {reason}") from None

    def refusal_reason(self, implementation: BackendCall, trial: Any, inputs: dict, exc: RuntimeError) -> str:
        """PyTorch's reasons for refusing: the warnings its kernel checks print (CUDA names each failed
        check), gathered by running the refused call once more; else its error's first line."""
        pinned = sdpa_kernel(getattr(SDPBackend, self.sdpa_kernel))
        with warnings.catch_warnings(record=True) as caught, pinned, contextlib.suppress(RuntimeError):
            warnings.simplefilter("always")
            implementation(trial, inputs)
        reasons = [TRIGGERED_AT.sub("", " ".join(str(w.message).split())).strip() for w in caught]
        text = ""
        for reason in dict.fromkeys(r for r in reasons if r):  # "kernel not used because:" + each check
            text += ("" if not text else " " if text.endswith(":") else "; ") + reason
        return text or str(exc).strip().splitlines()[0]


# Where in PyTorch's C++ a warning was raised: noise in a row's reason.
TRIGGERED_AT = re.compile(r"\s*\(Triggered internally at [^)]*\)")


def is_sdpa_refusal(exc: RuntimeError) -> bool:
    """The error SDPA raises when the kernels it may use all reject the inputs (no viable backend)."""
    message = str(exc)
    return "No viable backend" in message or "No available kernel" in message


# SDPA's kernels, each pinned (torch.nn.attention.SDPBackend member -> backend name).
PINNED_SDPA = {
    "FLASH_ATTENTION": "sdpa-flash",
    "EFFICIENT_ATTENTION": "sdpa-efficient",
    "CUDNN_ATTENTION": "sdpa-cudnn",
    "MATH": "sdpa-math",
}

BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend (plugins call this through ATTNSWEEP_PLUGINS); ValueError for a malformed one."""
    if not isinstance(backend, Backend):
        raise ValueError(f"a backend must be a workloads.backends.Backend, got {type(backend).__name__}")
    if not backend.name or backend.name != backend.name.strip() or "/" in backend.name:
        raise ValueError(f"backend name {backend.name!r} must be non-empty, without spaces around or '/'")
    if backend.name in BACKENDS and BACKENDS[backend.name] is not backend:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    if backend.implementation != backend.name and backend.implementation not in BACKENDS:
        raise ValueError(
            f"backend {backend.name!r} runs implementation {backend.implementation!r}, which no backend has"
        )
    for key in backend.implementations:
        if not (isinstance(key, tuple) and len(key) == 2 and key[1] in ("prefill", "decode")):
            raise ValueError(
                f"backend {backend.name!r}: an implementations key is (variant, 'prefill' or 'decode'), "
                f"not {key!r}"
            )
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})") from None


for _backend in (
    Backend("torch-ref", "plain matmul + softmax in PyTorch (materialises the score matrix)"),
    Backend("torch-sdpa", "scaled_dot_product_attention, PyTorch's automatic kernel choice", vendor=True),
    *(
        Backend(name, f"scaled_dot_product_attention pinned to {member}", "torch-sdpa", member, vendor=True)
        for member, name in PINNED_SDPA.items()
    ),
    Backend("flex", "FlexAttention under torch.compile (block masks cached per shape)", vendor=True),
    Backend("triton", "attnsweep's Triton kernels (compiled on a GPU, interpreted on a CPU)"),
):
    register_backend(_backend)

# The keys variants' own implementations use: every backend of the package runs one of these
# (torch-ref, torch-sdpa, flex, triton).
IMPLEMENTED_BACKENDS = tuple(dict.fromkeys(backend.implementation for backend in BACKENDS.values()))

# Head dims (d_qk, d_v) the Triton kernels accept, per phase: (min, max d_qk, max d_v). They mirror the
# kernels' own checks (kernels/_common.py, kernels/decode_attention), which a test holds them to; kept
# here so that the driver can tell `unsupported` from a failure without importing Triton.
TRITON_HEAD_DIMS = {"prefill": (16, 256, 256), "train": (16, 256, 256), "decode": (16, 576, 512)}


def choose_triton_mode() -> None:
    """Switch Triton's CPU interpreter on when there is no GPU. Call it before anything may import
    Triton: `kernels`, torch.compile (Inductor) and torch.profiler.profile import it, and Triton reads
    TRITON_INTERPRET once, so a flex trial first in a process would otherwise leave the triton backend
    unable to run."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def load_kernels() -> ModuleType:
    """`kernels`, with Triton's CPU interpreter switched on first when there is no GPU."""
    choose_triton_mode()
    import kernels  # here, not at the top: Triton reads TRITON_INTERPRET once, when first imported

    return kernels


def triton_version() -> str:
    if importlib.util.find_spec("triton") is None:
        return ""
    return version("triton")
