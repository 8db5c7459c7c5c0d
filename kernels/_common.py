"""Helpers shared by the kernels: tile loads, the dot product, the one work-around the CPU
interpreter needs, and input validation (each failure is a ValueError naming the entry point, the
argument, what it is (shape, dtype, device) and what was expected)."""

import math
import os

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2_E = 1.4426950408889634  # softmax runs in base 2: exp(x) = exp2(x · log2(e))
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def is_interpreted() -> bool:
    """True when Triton runs in its CPU interpreter (TRITON_INTERPRET set as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether `dot` must widen its operands: Triton's interpreter multiplies the raw uint16 bit
    patterns of bfloat16 operands in tl.dot (triton-lang/triton#11584), so interpreted bfloat16
    runs widen to float32 after rounding to bfloat16, which matches bf16 MMA with fp32 sums."""
    return is_interpreted() and dtype == torch.bfloat16


@triton.jit
def dot(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b in fp32; UPCAST (see `upcast_dot`) widens the operands first."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def load_tile(
    base,
    rows,
    offs_d,
    stride_row,
    stride_d,
    n_rows,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """[len(rows), BLOCK_D] tile at base[rows, offs_d], zeros past n_rows (when MASK_ROWS) and
    past HEAD_DIM. Addresses are formed here, per use, so no pointer tile stays live in registers
    across a loop; masks are emitted only where a tile can cross an edge."""
    ptrs = base + rows[:, None] * stride_row + offs_d[None, :] * stride_d
    if MASK_ROWS:
        mask = rows[:, None] < n_rows
        if HEAD_DIM != BLOCK_D:
            mask = mask & (offs_d[None, :] < HEAD_DIM)
        return tl.load(ptrs, mask=mask, other=0.0)
    elif HEAD_DIM != BLOCK_D:
        return tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    else:
        return tl.load(ptrs)


def check_rank(fn: str, name: str, tensor: object, layout: str) -> None:
    """`tensor` is a torch.Tensor whose rank is the number of comma-separated dims in `layout`."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor {layout}, got {type(tensor).__name__}")
    rank = layout.count(",") + 1
    if tensor.dim() != rank:
        raise ValueError(f"{fn}: {name} must have rank {rank} {layout}, got shape {tuple(tensor.shape)}")


def check_dim(fn: str, name: str, dim_name: str, value: int, ref_name: str, expected: int) -> None:
    """One dimension of `name` equals the same dimension of `ref_name`."""
    if value != expected:
        raise ValueError(f"{fn}: {name} has {dim_name} {value} but {ref_name} has {expected}")


def check_positive(fn: str, name: str, shape: torch.Size, dims: dict[str, int]) -> None:
    """Each named dimension (name -> index into shape) is at least 1: empty inputs are not launched."""
    for dim_name, index in dims.items():
        if shape[index] < 1:
            raise ValueError(
                f"{fn}: {name} has {dim_name} {shape[index]} (shape {tuple(shape)}), expected >= 1"
            )


def check_head_dim(fn: str, head_dim: int) -> None:
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"{fn}: head_dim {head_dim} is outside the supported {MIN_HEAD_DIM}..{MAX_HEAD_DIM}")


def check_float_dtypes(fn: str, tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """All tensors share one supported floating dtype, which is returned."""
    names = list(tensors)
    first = tensors[names[0]].dtype
    for name in names:
        dtype = tensors[name].dtype
        if dtype not in FLOAT_DTYPES:
            supported = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
            raise ValueError(f"{fn}: {name} has dtype {dtype}, expected one of {supported}")
        if dtype != first:
            raise ValueError(f"{fn}: {name} has dtype {dtype} but {names[0]} has {first}")
    return first


def check_devices(fn: str, tensors: dict[str, torch.Tensor]) -> torch.device:
    """All tensors on one device: CUDA when compiled, CPU when Triton is interpreted."""
    names = list(tensors)
    first = tensors[names[0]].device
    for name in names:
        device = tensors[name].device
        if device != first:
            raise ValueError(f"{fn}: {name} is on {device} but {names[0]} is on {first}")
    if is_interpreted():
        if first.type != "cpu":
            raise ValueError(
                f"{fn}: tensors are on {first}, but Triton is interpreted (TRITON_INTERPRET=1): "
                "expected CPU tensors"
            )
    elif first.type != "cuda":
        raise ValueError(
            f"{fn}: tensors are on {first}, expected a CUDA device "
            "(or set TRITON_INTERPRET=1 before importing triton to run on the CPU)"
        )
    return first


def check_out(fn: str, out: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
    """A caller-provided output buffer matches the output exactly (shape, dtype, device)."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{fn}: out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{fn}: out has dtype {out.dtype}, expected {dtype}")
    if out.device != device:
        raise ValueError(f"{fn}: out is on {out.device}, expected {device}")


def check_scale(fn: str, scale: object) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{fn}: scale must be a finite float or None, got {scale!r}")
