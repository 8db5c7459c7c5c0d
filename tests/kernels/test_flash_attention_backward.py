"""flash_attention_backward and flash_attention_with_grad against autograd through the float64
reference: dq, dk, dv by name, over lengths off the block grid, GQA ratios and MQA, causal alignment
(Nq != Nk, rows that see no key), separate query/key and value head dims, scale, strides, dtypes,
and input validation."""

import pytest
import torch

import kernels
from kernels.flash_attention import flash_attention_backward, flash_attention_with_grad
from kernels.flash_attention.backward import backward_block_config
from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import BACKWARD_HALF_REL_TOL, FP32_REL_TOL, GPU_REL_TOL, backward_inputs
from tests.kernels.invalid_inputs import BACKWARD_INVALID
from workloads.reference import attention

GRAD_NAMES = ("dq", "dk", "dv")


def reference(q, k, v, grad_out, **kwargs):
    """Float64 CPU autograd through the reference on the very values the kernel saw:
    (out, lse, {"dq": .., "dk": .., "dv": ..})."""
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    out, lse = attention(q64, k64, v64, return_lse=True, **kwargs)
    grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.detach().cpu().double())
    return out.detach(), lse.detach(), dict(zip(GRAD_NAMES, grads, strict=True))


def assert_grads_close(grads, expected, *, rel_tol, label=""):
    for name in GRAD_NAMES:
        assert_close(grads[name], expected[name], rel_tol=rel_tol, name=f"{name} {label}".strip())


def run_backward_into_nan(q, k, v, grad_out, **kwargs):
    """flash_attention_backward with the reference's out and lse, writing into gradient buffers
    pre-filled with NaN so an unwritten tile fails: (grads, expected grads)."""
    out, lse, expected = reference(q, k, v, grad_out, **kwargs)
    buffers = {name: torch.full_like(t, float("nan")) for name, t in zip(GRAD_NAMES, (q, k, v), strict=True)}
    out, lse = out.to(device=q.device, dtype=q.dtype), lse.to(device=q.device, dtype=torch.float32)
    result = flash_attention_backward(grad_out, q, k, v, out, lse, **kwargs, **buffers)
    assert all(r is buffers[name] for name, r in zip(GRAD_NAMES, result, strict=True))
    return buffers, expected


def grads_with_autograd(q, k, v, grad_out, **kwargs):
    """End to end: forward kernel + backward kernels through flash_attention_with_grad."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = flash_attention_with_grad(*leaves, **kwargs)
    out.backward(grad_out)
    return out, dict(zip(GRAD_NAMES, (t.grad for t in leaves), strict=True))


# (batch, Hq, Hkv, Nq, Nk, Dqk, Dv, causal). Interpreted tiles: dK/dV 32 keys × 16 queries,
# dQ 32 queries × 16 keys.
FP32_SHAPES = [
    pytest.param((1, 2, 2, 37, 37, 32, 32, False), id="mha-full-n37"),
    pytest.param((2, 2, 2, 50, 50, 32, 32, True), id="mha-causal-nq=nk-b2"),
    pytest.param((1, 4, 2, 37, 70, 32, 24, True), id="gqa2-causal-nq<nk-dv24"),
    pytest.param((1, 8, 2, 45, 29, 24, 24, False), id="gqa4-full-nq>nk-d24"),
    pytest.param((1, 4, 1, 50, 20, 16, 48, True), id="mqa4-causal-nq>nk-rows-without-keys"),
    pytest.param((1, 3, 1, 17, 45, 80, 80, False), id="mqa3-full-d80"),
    pytest.param((2, 4, 2, 33, 33, 48, 32, True), id="gqa2-causal-b2-dqk48-dv32"),
    pytest.param((1, 2, 1, 19, 40, 192, 128, True), id="mla-like-causal-dqk192-dv128"),
    pytest.param((1, 1, 1, 21, 40, 256, 256, False), id="mha-full-d256"),
    pytest.param((1, 2, 2, 1, 50, 64, 64, True), id="mha-causal-nq1"),
    pytest.param((2, 2, 1, 64, 64, 16, 16, False), id="mqa2-full-block-multiples"),
]


@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_flash_attention_backward_fp32_matches_reference(shape, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, causal = shape
    inputs = backward_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, dtype=torch.float32, device=device
    )
    grads, expected = run_backward_into_nan(*inputs, causal=causal)
    assert_grads_close(grads, expected, rel_tol=FP32_REL_TOL)


def test_flash_attention_backward_causal_diagonal_at_every_key_offset(device):
    """Nk - Nq over every residue of the blocks the diagonal cuts (dQ's key blocks, dK/dV's query
    blocks; the other sides are multiples of them) and both signs, so the diagonal starts and ends
    at each position inside a block: catches off-by-one loop bounds and mask splits."""
    dkdv_tiles, dq_tiles = backward_block_config(16, 16, torch.float32)
    period = max(dkdv_tiles.block_m, dq_tiles.block_n)
    assert dkdv_tiles.block_n % period == 0 and dq_tiles.block_m % period == 0
    n_q = dq_tiles.block_m + 3
    for n_k in range(n_q - period // 2, n_q + period // 2 + 1):
        inputs = backward_inputs(1, 2, 1, n_q, n_k, 16, 16, dtype=torch.float32, device=device, seed=n_k)
        grads, expected = run_backward_into_nan(*inputs, causal=True)
        assert_grads_close(grads, expected, rel_tol=FP32_REL_TOL, label=f"Nq={n_q} Nk={n_k}")


def test_flash_attention_backward_rows_without_keys_get_zero_dq(device):
    """Causal with Nq > Nk: the first Nq - Nk queries see no key (lse = -inf): dq is exactly 0 and
    they add nothing to dk, dv."""
    inputs = backward_inputs(1, 2, 1, 40, 10, 32, 32, dtype=torch.float32, device=device)
    grads, expected = run_backward_into_nan(*inputs, causal=True)
    assert torch.all(grads["dq"][:, :, :30] == 0)
    assert_grads_close(grads, expected, rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_backward_custom_scale(causal, device):
    inputs = backward_inputs(1, 4, 2, 37, 50, 48, 48, dtype=torch.float32, device=device)
    grads, expected = run_backward_into_nan(*inputs, causal=causal, scale=0.3)
    assert_grads_close(grads, expected, rel_tol=FP32_REL_TOL)


def test_flash_attention_backward_non_contiguous_inputs_and_gradients(device):
    """q, grad_out and the gradient buffers as [B, N, H, D] transposed, k as head-dim slices of
    wider rows, out contiguous: every kernel reads and writes through strides."""
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v = 2, 4, 2, 37, 50, 32, 24
    generator = torch.Generator().manual_seed(1)

    def transposed(*shape):  # [B, N, H, D] storage seen as [B, H, N, D]
        return random_tensor(*shape, device=device, generator=generator).transpose(1, 2)

    q = transposed(batch, n_q, n_q_heads, head_dim_qk)
    k = random_tensor(batch, n_kv_heads, n_k, 2 * head_dim_qk, device=device, generator=generator)[
        ..., :head_dim_qk
    ]
    v = transposed(batch, n_k, n_kv_heads, head_dim_v)
    grad_out = transposed(batch, n_q, n_q_heads, head_dim_v)
    buffers = {
        name: torch.full(t.transpose(1, 2).shape, float("nan"), device=device).transpose(1, 2)
        for name, t in zip(GRAD_NAMES, (q, k, v), strict=True)
    }
    assert not any(t.is_contiguous() for t in (q, k, v, grad_out, *buffers.values()))
    out, lse, expected = reference(q, k, v, grad_out, causal=True)
    flash_attention_backward(grad_out, q, k, v, out.float(), lse.float(), causal=True, **buffers)
    assert_grads_close(buffers, expected, rel_tol=FP32_REL_TOL)


# End to end: (batch, Hq, Hkv, Nq, Nk, Dqk, Dv, causal), the forward kernel's out and lse.
AUTOGRAD_SHAPES = [
    pytest.param((2, 4, 2, 37, 29, 32, 32, True), id="gqa2-causal-nq>nk-b2"),
    pytest.param((1, 4, 1, 33, 50, 40, 24, False), id="mqa4-full-dqk40-dv24"),
    pytest.param((1, 4, 4, 45, 45, 24, 24, True), id="mha-causal-d24"),
]


@pytest.mark.parametrize("shape", AUTOGRAD_SHAPES)
def test_flash_attention_with_grad_fp32_matches_reference(shape, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, causal = shape
    q, k, v, grad_out = backward_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, dtype=torch.float32, device=device
    )
    out, grads = grads_with_autograd(q, k, v, grad_out, causal=causal)
    ref_out, _, expected = reference(q, k, v, grad_out, causal=causal)
    assert_close(out, ref_out, rel_tol=FP32_REL_TOL, name="out")
    assert_grads_close(grads, expected, rel_tol=FP32_REL_TOL)


def test_flash_attention_with_grad_sum_loss_and_partial_requires_grad(device):
    """loss = out.sum() hands the backward a stride-0 (expanded) grad_out; only k needs a
    gradient; a custom scale reaches both passes."""
    q, k, v, _ = backward_inputs(1, 4, 2, 37, 41, 32, 32, dtype=torch.float32, device=device)
    k_leaf = k.clone().requires_grad_()
    flash_attention_with_grad(q, k_leaf, v, causal=True, scale=0.25).sum().backward()
    _, _, expected = reference(q, k, v, torch.ones(1, 4, 37, 32), causal=True, scale=0.25)
    assert_close(k_leaf.grad, expected["dk"], rel_tol=FP32_REL_TOL, name="dk")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((2, 4, 2, 37, 29, 64, 64, False), id="gqa2-full-b2"),
        pytest.param((1, 4, 1, 37, 50, 48, 32, True), id="mqa4-causal-nq<nk-dqk48-dv32"),
    ],
)
def test_flash_attention_backward_half_precision(shape, dtype, device):
    """Kernel alone (reference out and lse) and end to end (the forward's), in the input dtype."""
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, causal = shape
    inputs = backward_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim_qk, head_dim_v, dtype=dtype, device=device
    )
    grads, expected = run_backward_into_nan(*inputs, causal=causal)
    assert all(grads[name].dtype == dtype for name in GRAD_NAMES)
    assert_grads_close(grads, expected, rel_tol=BACKWARD_HALF_REL_TOL[dtype], label="kernel")
    _, grads = grads_with_autograd(*inputs, causal=causal)
    assert all(grads[name].dtype == dtype for name in GRAD_NAMES)
    assert_grads_close(grads, expected, rel_tol=BACKWARD_HALF_REL_TOL[dtype], label="autograd")


@pytest.mark.parametrize("build, message", BACKWARD_INVALID)
def test_flash_attention_backward_rejects_invalid_input(build, message, device):
    tensors, kwargs = build(device)
    with pytest.raises(ValueError, match=message):
        flash_attention_backward(*tensors, **kwargs)


def test_flash_attention_with_grad_validates_through_the_forward(device):
    q, k, v, _ = backward_inputs(1, 3, 2, 8, 8, 32, 32, dtype=torch.float32, device=device)
    with pytest.raises(ValueError, match="q has 3 heads, not a multiple"):
        flash_attention_with_grad(q, k, v)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "n_q, n_k, head_dim_qk, head_dim_v, causal",
    [
        pytest.param(2048, 2048, 128, 128, True, id="causal-2k-d128"),
        pytest.param(1000, 3000, 128, 128, True, id="causal-nq<nk-d128"),
        pytest.param(2048, 2048, 64, 64, False, id="full-2k-d64"),
        pytest.param(1024, 1024, 192, 128, True, id="mla-prefill-dqk192-dv128"),
    ],
)
def test_flash_attention_with_grad_gpu_realistic(n_q, n_k, head_dim_qk, head_dim_v, causal, dtype):
    """Compiled kernels at training shapes (H=16, Hkv=4) against float32 GPU autograd of the reference."""
    q, k, v, grad_out = backward_inputs(
        2, 16, 4, n_q, n_k, head_dim_qk, head_dim_v, dtype=dtype, device="cuda"
    )
    _, grads = grads_with_autograd(q, k, v, grad_out, causal=causal)
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    ref = attention(*leaves, causal=causal, query_chunk=256)
    expected = dict(zip(GRAD_NAMES, torch.autograd.grad(ref, leaves, grad_out.float()), strict=True))
    assert_grads_close(grads, expected, rel_tol=GPU_REL_TOL[dtype])


def test_exported_flash_attention_is_differentiable_and_refuses_what_has_no_backward():
    """kernels.flash_attention itself goes through the backward when an input requires grad."""
    q, k, v, _ = backward_inputs(1, 4, 2, 21, 21, 16, 16, dtype=torch.float32, device="cpu")
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = kernels.flash_attention(q, k, v, causal=True)
    out.sum().backward()
    ref_q, ref_k, ref_v = (t.detach().double().requires_grad_() for t in (q, k, v))
    attention(ref_q, ref_k, ref_v, causal=True).sum().backward()
    for name, got, ref in (
        ("dq", q.grad, ref_q.grad),
        ("dk", k.grad, ref_k.grad),
        ("dv", v.grad, ref_v.grad),
    ):
        assert_close(got, ref, rel_tol=1e-5, name=name)
    with pytest.raises(ValueError, match="only that has a backward"):
        kernels.flash_attention(q, k, v, causal=True, window=4)
