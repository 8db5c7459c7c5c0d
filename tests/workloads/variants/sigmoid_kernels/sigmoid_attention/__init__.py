"""A test-only kernel family (never shipped), the kernel of the worked example of
docs/adding-a-variant.md: sigmoid attention over a causal sliding window,

    o_i = Σ_{j ≤ i, i - j < window} σ(scale · q_i·k_j + bias) · v_j

q [B, Hq, N, D], k, v [B, Hkv, N, D] -> o [B, Hq, N, D], GQA by index arithmetic (query head h reads
KV head h // (Hq / Hkv)). No softmax, so no running max and no normaliser: each key tile adds its
weighted values to the accumulator. It lives outside kernels/ on purpose: the tests put this folder's
parent on the kernels package's search path, where discovery finds it as if it were kernels/<folder>
(kernels/_families.py), AOT_CASES included.
"""

import math
from functools import partial

import torch
import triton
import triton.language as tl

from kernels._common import (
    Launch,
    batch_and_heads,
    check_devices,
    check_qkv,
    check_scale,
    dot,
    dot_precision,
    load_tile,
    output_buffer,
    upcast_dot,
)

BLOCK = 32  # queries per program and keys per loop step


@triton.jit
def _sigmoid_attention_fwd(
    Q, K, V, Out,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads, seq_len, scale, bias, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """One program per (tile of BLOCK_M queries, batch · head)."""
    off_b, off_h, off_kv_h = batch_and_heads(tl.program_id(1), n_heads, GROUP)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # query positions [BLOCK_M]
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_kv_h * stride_kh
    v_base = V + off_b * stride_vb + off_kv_h * stride_vh
    q = load_tile(q_base, rows, offs_d, stride_qn, stride_qd, seq_len, HEAD_DIM, BLOCK_D, True)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    # Causal: keys after the tile's last query carry no weight, so the loop stops there.
    for start in range(0, (tl.program_id(0) + 1) * BLOCK_M, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # key positions [BLOCK_N]
        k = load_tile(k_base, cols, offs_d, stride_kn, stride_kd, seq_len, HEAD_DIM, BLOCK_D, True)
        v = load_tile(v_base, cols, offs_d, stride_vn, stride_vd, seq_len, HEAD_DIM, BLOCK_D, True)
        scores = dot(
            q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), DOT_PRECISION, UPCAST_DOT
        )
        distance = rows[:, None] - cols[None, :]  # [BLOCK_M, BLOCK_N]
        visible = (distance >= 0) & (distance < window) & (cols[None, :] < seq_len)
        weights = tl.where(visible, tl.sigmoid(scores * scale + bias), 0.0)
        acc = dot(weights.to(v.dtype), v, acc, DOT_PRECISION, UPCAST_DOT)
    out_ptrs = (
        Out + off_b * stride_ob + off_h * stride_oh + rows[:, None] * stride_on + offs_d[None, :] * stride_od
    )
    tl.store(
        out_ptrs, acc.to(Out.dtype.element_ty), mask=(rows[:, None] < seq_len) & (offs_d[None, :] < HEAD_DIM)
    )


def sigmoid_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    *,
    scale: float,
    bias: float,
    window: int,
) -> Launch:
    """The one launch of `sigmoid_attention`, from checked and allocated tensors (meta ones too: AOT)."""
    batch, n_heads, seq_len, head_dim = q.shape
    return Launch(
        kernel=_sigmoid_attention_fwd,
        grid=(triton.cdiv(seq_len, BLOCK), batch * n_heads),
        args=(
            q,
            k,
            v,
            out,
            *q.stride(),
            *k.stride(),
            *v.stride(),
            *out.stride(),
            n_heads,
            seq_len,
            scale,
            bias,
            window,
        ),
        constexprs={
            "GROUP": n_heads // k.shape[1],
            "HEAD_DIM": head_dim,
            "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),  # tl.dot takes tiles of 16 and up
            "BLOCK_M": BLOCK,
            "BLOCK_N": BLOCK,
            "DOT_PRECISION": dot_precision(q.dtype),
            "UPCAST_DOT": upcast_dot(q.dtype),
        },
        num_warps=4,
        num_stages=1,
    )


def sigmoid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    bias: float = 0.0,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal self-attention with weights σ(scale · q·k + bias) over the last `window` keys of each
    query (itself included); scale defaults to 1/sqrt(D)."""
    fn = "sigmoid_attention"
    head_dim = check_qkv(fn, q, k, v, self_attention=True)[3]
    device = check_devices(fn, {"q": q, "k": k, "v": v})
    check_scale(fn, scale)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"{fn}: window must be an int >= 1, got {window!r}")
    if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias):
        raise ValueError(f"{fn}: bias must be a finite float, got {bias!r}")
    out = output_buffer(fn, out, tuple(q.shape), q.dtype, device)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    sigmoid_launch(q, k, v, out, scale=scale, bias=float(bias), window=window).run()
    return out


def _aot_case(
    head_dim: int, *, batch: int = 2, heads: int = 16, kv_heads: int = 4, seq_len: int = 4096
) -> list[Launch]:
    """The launch at a GPU sweep's shape, on meta tensors (bf16)."""
    q, out = (
        torch.empty(batch, heads, seq_len, head_dim, dtype=torch.bfloat16, device="meta") for _ in range(2)
    )
    k, v = (
        torch.empty(batch, kv_heads, seq_len, head_dim, dtype=torch.bfloat16, device="meta") for _ in range(2)
    )
    return [sigmoid_launch(q, k, v, out, scale=head_dim**-0.5, bias=-1.0, window=1024)]


# What `python -m kernels.aot` compiles for this family, as "sigmoid_attention/<case>" (kernels/_families.py).
AOT_CASES = {"bf16/d128": partial(_aot_case, 128)}

__all__ = ["sigmoid_attention"]
