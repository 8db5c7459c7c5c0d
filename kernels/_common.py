"""Helpers shared by the kernels: tile loads, the dot product, the one work-around the CPU
interpreter needs, input validation (each failure is a ValueError naming the entry point, the
argument, what it is (shape, dtype, device) and what was expected), and `Launch`, a launch decided
in full before it runs."""

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2_E = 1.4426950408889634  # softmax runs in base 2: exp(x) = exp2(x · log2(e))
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully decided: the kernel, its grid, its runtime arguments in order
    (tensors, ints, floats), its compile-time constants, warps and stages.

    Each kernel family builds its launches in one plain function from validated, allocated tensors;
    its public entry point runs them, and `kernels.aot` compiles the very same objects for a GPU
    target without a GPU (from meta tensors), so what is checked offline is what runs."""

    kernel: Any  # a triton.JITFunction (an InterpretedFunction under TRITON_INTERPRET=1)
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def run(self) -> None:
        self.kernel[self.grid](
            *self.args, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages
        )


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: exact fp32 ("ieee") for float32 inputs; 2-byte types run on the
    tensor cores either way ("tf32" names the fast path)."""
    return "ieee" if dtype == torch.float32 else "tf32"


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


def output_buffer(
    fn: str, out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The caller's `out` once it matches (`check_out`), else a new uninitialised tensor: the kernels
    write every element of their output."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    check_out(fn, out, shape, dtype, device)
    return out


def check_scale(fn: str, scale: object) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{fn}: scale must be a finite float or None, got {scale!r}")


@triton.jit
def online_softmax_update(
    acc, l_i, m_i, qk, v, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr
):
    """Fold one tile of log2-domain scores qk [BLOCK_M, BLOCK_N] and its values v [BLOCK_N, BLOCK_D]
    into the running numerator acc [BLOCK_M, BLOCK_D] (fp32), denominator l_i and max m_i [BLOCK_M];
    returns the new (acc, l_i, m_i). MASKED tiles may hold -inf scores, even whole rows of them."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))  # [BLOCK_M]
    if MASKED:
        # A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
        m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new_safe = m_new
    p = tl.math.exp2(qk - m_new_safe[:, None])  # [BLOCK_M, BLOCK_N]
    alpha = tl.math.exp2(m_i - m_new_safe)  # [BLOCK_M], 0 on the first visible tile
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = dot(p.to(v.dtype), v, acc, DOT_PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_D] fp32
    return acc, l_i, m_new


def check_qkv(
    fn: str, q: object, k: object, v: object, *, self_attention: bool = False
) -> tuple[int, int, int, int, int, int]:
    """`check_qk_v` with one head dim for q, k and v; with self_attention also Nk == Nq.
    Returns (B, Hq, Nq, D, Hkv, Nk)."""
    batch, n_q_heads, n_q, head_dim, n_kv_heads, n_k, head_dim_v = check_qk_v(fn, q, k, v)
    check_dim(fn, "v", "head_dim", head_dim_v, "q", head_dim)
    if self_attention:
        check_dim(fn, "k", "seq_len", n_k, "q", n_q)
    return batch, n_q_heads, n_q, head_dim, n_kv_heads, n_k


@triton.jit
def batch_and_heads(pid_bh, n_heads, GROUP: tl.constexpr):
    """(off_b, off_h, off_kv_h), int64, of a program over batch · n_heads (axis pid_bh): batch,
    head, and the KV head it reads under GQA (query heads [g·GROUP, (g+1)·GROUP) share head g)."""
    off_b = (pid_bh // n_heads).to(tl.int64)
    off_h = (pid_bh % n_heads).to(tl.int64)
    return off_b, off_h, off_h // GROUP


def check_qk_v(fn: str, q: object, k: object, v: object) -> tuple[int, int, int, int, int, int, int]:
    """q [B, Hq, Nq, Dqk], k [B, Hkv, Nk, Dqk], v [B, Hkv, Nk, Dv] as flash_attention and its
    backward take them (Dv may differ from Dqk: MLA prefill): non-empty, Hq % Hkv == 0, both head
    dims in range, one supported float dtype (devices are the caller's to check, with any further
    tensors). Returns (B, Hq, Nq, Dqk, Hkv, Nk, Dv)."""
    check_rank(fn, "q", q, "[B, Hq, Nq, Dqk]")
    check_rank(fn, "k", k, "[B, Hkv, Nk, Dqk]")
    check_rank(fn, "v", v, "[B, Hkv, Nk, Dv]")
    batch, n_q_heads, n_q, head_dim_qk = q.shape
    n_kv_heads, n_k, head_dim_v = k.shape[1], k.shape[2], v.shape[3]
    for name, tensor in (("k", k), ("v", v)):
        check_dim(fn, name, "batch", tensor.shape[0], "q", batch)
    check_dim(fn, "k", "head_dim", k.shape[3], "q", head_dim_qk)
    check_dim(fn, "v", "heads", v.shape[1], "k", n_kv_heads)
    check_dim(fn, "v", "seq_len", v.shape[2], "k", n_k)
    check_positive(fn, "q", q.shape, {"batch": 0, "heads": 1, "seq_len": 2})
    check_positive(fn, "k", k.shape, {"heads": 1, "seq_len": 2})
    if n_q_heads % n_kv_heads:
        raise ValueError(
            f"{fn}: q has {n_q_heads} heads, not a multiple of the {n_kv_heads} heads of k and v"
        )
    check_head_dim(fn, head_dim_qk)
    if not MIN_HEAD_DIM <= head_dim_v <= MAX_HEAD_DIM:
        raise ValueError(
            f"{fn}: v has head_dim {head_dim_v}, outside the supported {MIN_HEAD_DIM}..{MAX_HEAD_DIM}"
        )
    check_float_dtypes(fn, {"q": q, "k": k, "v": v})
    return batch, n_q_heads, n_q, head_dim_qk, n_kv_heads, n_k, head_dim_v


def check_window_sink(
    fn: str, window: object, sink: object, n_kv_heads: int, kv_name: str, device: torch.device
) -> None:
    """Sliding window + attention sink of streaming heads: sink an int >= 0; window None, an int
    (every KV head) or an int32 tensor [Hkv] on `device` (one per KV head of `kv_name`)."""
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise ValueError(f"{fn}: sink must be an int >= 0, got {sink!r}")
    if window is None:
        return
    if isinstance(window, torch.Tensor):
        check_rank(fn, "window", window, "[Hkv]")
        check_dim(fn, "window", "heads", window.shape[0], kv_name, n_kv_heads)
        if window.dtype != torch.int32:
            raise ValueError(f"{fn}: window has dtype {window.dtype}, expected torch.int32")
        if window.device != device:
            raise ValueError(f"{fn}: window is on {window.device} but q is on {device}")
    elif isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"{fn}: window must be None, an int or an int32 tensor [Hkv], got {window!r}")


@triton.jit
def causal_key_bounds(first_pos, last_pos, n_k, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """(full_end, end) of the keys a query tile attends, for its first and last real query rows at
    key positions first_pos <= last_pos: keys below full_end (a multiple of BLOCK_N) are visible
    to every row of the tile (no mask needed), keys from end on to none (never visited)."""
    if CAUSAL:
        full_end = tl.minimum(tl.maximum(first_pos + 1, 0), n_k)
        end = tl.minimum(tl.maximum(last_pos + 1, 0), n_k)
    else:
        full_end = n_k
        end = n_k
    return (full_end // BLOCK_N) * BLOCK_N, end
