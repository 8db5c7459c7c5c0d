"""The public flash-attention functions and autograd through them. Each checks its inputs, allocates
what it returns and runs the launches of `forward` (`forward_launch`) or `backward`
(`backward_launches`). This module imports both launch modules and neither imports it back, so
the family has no import cycle (fla's layout: one module per pass, one interface over them)."""

import torch
from torch.autograd.function import once_differentiable

from kernels._common import (
    check_devices,
    check_float_dtypes,
    check_qk_v,
    check_rank,
    check_scale,
    check_window_sink,
    output_buffer,
)
from kernels.flash_attention.backward import backward_launches
from kernels.flash_attention.forward import forward_launch

WEIGHTINGS = ("softmax", "cog")


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    window: int | torch.Tensor | None = None,
    sink: int = 0,
    weighting: str = "softmax",
    return_lse: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """weights(q kᵀ · scale) v. Differentiable (through `FlashAttentionFunction`) when an input
    requires grad and the weighting is plain softmax without a window.

    q [B, Hq, Nq, Dqk], k [B, Hkv, Nk, Dqk], v [B, Hkv, Nk, Dv], Hq % Hkv == 0 (MHA, GQA, MQA):
    query head h reads KV head h // (Hq // Hkv). Dqk and Dv each in 16..256 (Dqk != Dv is MLA
    prefill, e.g. 192 and 128). dtype float32, float16 or bfloat16 (all the same); any strides.

    Which keys query i sees, at position p = i + Nk - Nq (bottom-right alignment): all keys, or
    with `causal` keys j <= p; a query that sees no key (causal, Nq > Nk) outputs zeros.
    `window` (needs `causal`): None, an int for every KV head or an int32 tensor [Hkv] on q's
    device; a KV head with window W > 0 further keeps only keys p - W < j <= p plus the first
    `sink` (>= 0) keys (streaming heads), one with W <= 0 keeps its whole causal past (retrieval
    heads). Key blocks that no query of a tile sees are skipped.

    `weighting` "softmax", or "cog": weights sign(s) · exp(|s|) / sum over visible keys of exp(|s|).
    `scale` defaults to 1/sqrt(Dqk). `out` [B, Hq, Nq, Dv] (q's dtype and device), when given, is
    written and returned. Returns o [B, Hq, Nq, Dv] in q's dtype, or with `return_lse` (softmax
    only) (o, lse): lse float32 [B, Hq, Nq], the natural-log logsumexp of s over the visible keys
    (-inf for a query that sees none), as a backward pass needs it.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v) if isinstance(t, torch.Tensor)):
        _check_differentiable(window, weighting, return_lse, out)
        return FlashAttentionFunction.apply(q, k, v, causal, scale)
    device = _check_forward(
        q, k, v, causal=causal, scale=scale, window=window, sink=sink, weighting=weighting,
        return_lse=return_lse,
    )  # fmt: skip
    window = _window_per_kv_head(window, k.shape[1], k.shape[2], device)
    out = output_buffer("flash_attention", out, (*q.shape[:3], v.shape[3]), q.dtype, device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=device) if return_lse else None
    launch = forward_launch(
        q, k, v, out, lse, window, causal=causal, scale=scale, sink=sink, weighting=weighting
    )
    launch.run()
    return (out, lse) if return_lse else out


def flash_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    dq: torch.Tensor | None = None,
    dk: torch.Tensor | None = None,
    dv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of o = softmax(q kᵀ · scale) v with respect to q, k and v.

    q [B, Hq, Nq, Dqk], k [B, Hkv, Nk, Dqk], v [B, Hkv, Nk, Dv] as given to `flash_attention`
    (Hq % Hkv == 0; Dqk and Dv in 16..256, may differ); out and grad_out [B, Hq, Nq, Dv]: the
    forward's output and the gradient of the loss with respect to it; lse float32 [B, Hq, Nq]: the
    forward's natural-log logsumexp of the scaled scores over the visible keys (-inf for a row that
    sees none). q, k, v, out, grad_out share one dtype (float32, float16, bfloat16) and device;
    any strides. `causal` (bottom-right aligned) and `scale` (default 1/sqrt(Dqk)) must be the
    forward's. A row with lse = -inf contributes nothing and gets dq = 0. dq, dk, dv, when given
    (shape, dtype and device of q, k, v), are written and returned.
    Returns (dq, dk, dv) in the inputs' dtype; dk and dv summed over the query heads of each KV head.
    """
    dtype, device = _check_backward(grad_out, q, k, v, out, lse, dq, dk, dv, scale=scale)
    dq, dk, dv = (
        torch.empty(like.shape, dtype=dtype, device=device) if buffer is None else buffer
        for buffer, like in ((dq, q), (dk, k), (dv, v))
    )
    for launch in backward_launches(grad_out, q, k, v, out, lse, dq, dk, dv, causal=causal, scale=scale):
        launch.run()
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd through `flash_attention`: the forward keeps q, k, v, out and the log-sum-exp
    (O(N) extra memory); the backward recomputes the probabilities from them."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        # Autograd runs this with grad mode off, so flash_attention takes its plain path here.
        out, lse = flash_attention(q, k, v, causal=causal, scale=scale, return_lse=True)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal = causal
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable  # the backward kernels have no backward of their own
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_out, q, k, v, out, lse, causal=ctx.causal, scale=ctx.scale)
        return dq, dk, dv, None, None


def flash_attention_with_grad(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """`flash_attention(q, k, v, causal=causal, scale=scale)` that autograd can differentiate.

    Same shapes and semantics as the forward (v may have its own head dim Dv: o is [B, Hq, Nq, Dv]);
    sliding window, sinks and other weightings have no backward and are not offered here.
    """
    return FlashAttentionFunction.apply(q, k, v, causal, scale)


def _check_differentiable(window: object, weighting: object, return_lse: bool, out: object) -> None:
    """Autograd goes through the backward kernels, which implement softmax without a window only."""
    if window is not None or weighting != "softmax" or return_lse or out is not None:
        raise ValueError(
            "flash_attention: inputs that require grad need plain softmax attention (no window, "
            "cog, return_lse or out=): only that has a backward"
        )


def _check_forward(
    q: object,
    k: object,
    v: object,
    *,
    causal: bool,
    scale: object,
    window: object,
    sink: object,
    weighting: object,
    return_lse: bool,
) -> torch.device:
    """flash_attention's arguments but `out` are well formed (else a ValueError says which is not);
    returns the inputs' device."""
    fn = "flash_attention"
    n_kv_heads = check_qk_v(fn, q, k, v)[4]
    device = check_devices(fn, {"q": q, "k": k, "v": v})
    check_scale(fn, scale)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"{fn}: weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if return_lse and weighting != "softmax":
        raise ValueError(f"{fn}: return_lse needs weighting='softmax', got {weighting!r}")
    check_window_sink(fn, window, sink, n_kv_heads, "k", device)
    if window is not None and not causal:
        raise ValueError(f"{fn}: window requires causal=True (a sliding window looks back from each query)")
    return device


def _window_per_kv_head(
    window: int | torch.Tensor | None, n_kv_heads: int, n_k: int, device: torch.device
) -> torch.Tensor | None:
    """A checked window as the kernel reads it: int32 [Hkv] on the device, or None when it hides no
    key at all. An int window applies to every KV head, and one <= 0 or >= Nk hides nothing (query
    positions are below Nk), so it launches the plain kernel."""
    if window is None or isinstance(window, torch.Tensor):
        return window
    if window <= 0 or window >= n_k:
        return None
    return torch.full((n_kv_heads,), window, dtype=torch.int32, device=device)


def _check_backward(
    grad_out: object,
    q: object,
    k: object,
    v: object,
    out: object,
    lse: object,
    dq: object,
    dk: object,
    dv: object,
    *,
    scale: object,
) -> tuple[torch.dtype, torch.device]:
    """flash_attention_backward's arguments are well formed (else a ValueError says which is not);
    returns the inputs' dtype and device. dq, dk, dv: the caller's gradient buffers or None."""
    fn = "flash_attention_backward"
    batch, n_q_heads, n_q, _, _, _, head_dim_v = check_qk_v(fn, q, k, v)
    out_shape = (batch, n_q_heads, n_q, head_dim_v)
    _check_shape(fn, "out", out, "[B, Hq, Nq, Dv]", out_shape)
    _check_shape(fn, "grad_out", grad_out, "[B, Hq, Nq, Dv]", out_shape)
    _check_shape(fn, "lse", lse, "[B, Hq, Nq]", out_shape[:3])
    buffers = {
        "dq": (dq, q, "[B, Hq, Nq, Dqk]"),
        "dk": (dk, k, "[B, Hkv, Nk, Dqk]"),
        "dv": (dv, v, "[B, Hkv, Nk, Dv]"),
    }
    given = {name: buffer for name, (buffer, _, _) in buffers.items() if buffer is not None}
    for name, buffer in given.items():
        _, like, layout = buffers[name]
        _check_shape(fn, name, buffer, layout, tuple(like.shape))
    dtype = check_float_dtypes(fn, {"q": q, "out": out, "grad_out": grad_out, **given})
    if lse.dtype != torch.float32:
        raise ValueError(f"{fn}: lse has dtype {lse.dtype}, expected torch.float32")
    tensors = {"q": q, "k": k, "v": v, "out": out, "grad_out": grad_out, "lse": lse, **given}
    device = check_devices(fn, tensors)
    check_scale(fn, scale)
    return dtype, device


def _check_shape(fn: str, name: str, tensor: object, layout: str, expected: tuple[int, ...]) -> None:
    check_rank(fn, name, tensor, layout)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{fn}: {name} has shape {tuple(tensor.shape)}, expected {expected} {layout}")
