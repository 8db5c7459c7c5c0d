"""flash_attention against the float64 reference: lengths off the block grid, GQA ratios, causal
alignment, head dims (also d_qk != d_v, MLA prefill), scale, strides, dtypes, the log-sum-exp
output, and input validation. Windows, sinks and Cog weighting: test_flash_attention_masks.py."""

import pytest
import torch

from kernels import flash_attention
from kernels.flash_attention import block_config
from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import (
    FP32_REL_TOL,
    GPU_LSE_REL_TOL,
    GPU_REL_TOL,
    HALF_LSE_REL_TOL,
    HALF_REL_TOL,
    assert_lse_close,
    attention_inputs,
    attention_reference,
    run_flash_into_nan,
)
from tests.kernels.invalid_inputs import FLASH_INVALID
from workloads.reference import attention

# (batch, Hq, Hkv, Nq, Nk, head_dim, causal). Interpreted tiles are 32 queries × 16 keys.
FP32_SHAPES = [
    pytest.param((1, 2, 2, 37, 37, 32, False), id="mha-full-n37"),
    pytest.param((2, 2, 2, 50, 50, 64, True), id="mha-causal-nq=nk-b2"),
    pytest.param((1, 4, 2, 37, 100, 32, True), id="gqa2-causal-nq<nk"),
    pytest.param((1, 8, 2, 50, 37, 24, False), id="gqa4-full-nq>nk-d24"),
    pytest.param((1, 16, 2, 20, 33, 48, True), id="gqa8-causal-nq<nk-d48"),
    pytest.param((1, 4, 1, 50, 20, 16, True), id="mqa4-causal-nq>nk"),
    pytest.param((1, 3, 1, 17, 45, 80, False), id="mqa3-full-d80"),
    pytest.param((1, 2, 2, 1, 50, 64, True), id="mha-causal-nq1"),
    pytest.param((3, 4, 2, 33, 33, 96, True), id="gqa2-causal-b3-d96"),
    pytest.param((1, 2, 1, 16, 16, 128, False), id="mqa2-full-d128-n16"),
    pytest.param((1, 1, 1, 19, 40, 256, True), id="mha-causal-d256"),
    pytest.param((1, 2, 2, 70, 5, 32, True), id="mha-causal-nq>>nk-empty-blocks"),
    pytest.param((2, 2, 1, 64, 64, 16, False), id="mqa2-full-block-multiples"),
]


@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_flash_attention_fp32_matches_reference(shape, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, causal = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, dtype=torch.float32, device=device
    )
    out = run_flash_into_nan(q, k, v, causal=causal)
    assert_close(out, attention_reference(q, k, v, causal=causal), rel_tol=FP32_REL_TOL)


# (batch, Hq, Hkv, Nq, Nk, d_qk, d_v, causal): q and k share d_qk, v and the output have d_v.
SPLIT_HEAD_DIM_SHAPES = [
    pytest.param((2, 4, 2, 37, 50, 192, 128, True), id="gqa2-causal-mla-dqk192-dv128-b2"),
    pytest.param((1, 4, 1, 33, 20, 48, 80, False), id="mqa4-full-dqk48-dv80"),
    pytest.param((1, 6, 2, 21, 45, 24, 16, True), id="gqa3-causal-dqk24-dv16"),
    pytest.param((1, 2, 2, 40, 40, 16, 256, True), id="mha-causal-dqk16-dv256"),
]


@pytest.mark.parametrize("shape", SPLIT_HEAD_DIM_SHAPES)
def test_flash_attention_split_head_dims_fp32(shape, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v, causal = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim,
        head_dim_v=head_dim_v, dtype=torch.float32, device=device,
    )  # fmt: skip
    out = run_flash_into_nan(q, k, v, causal=causal)
    assert out.shape == (batch, n_q_heads, n_q, head_dim_v)
    assert_close(out, attention_reference(q, k, v, causal=causal), rel_tol=FP32_REL_TOL)


# (batch, Hq, Hkv, Nq, Nk, d_qk, d_v), keyword arguments
LSE_CASES = [
    pytest.param((2, 4, 2, 37, 50, 32, 32), {"causal": True}, id="gqa2-causal-nq<nk-b2"),
    pytest.param((1, 2, 1, 40, 10, 32, 32), {"causal": True}, id="mqa2-causal-rows-without-keys"),
    pytest.param((1, 2, 2, 37, 37, 48, 48), {"causal": False, "scale": 0.3}, id="mha-full-scale0.3"),
    pytest.param((1, 4, 1, 33, 45, 40, 24), {"causal": True}, id="mqa4-causal-dqk40-dv24"),
]


@pytest.mark.parametrize("shape, kwargs", LSE_CASES)
def test_flash_attention_lse_fp32(shape, kwargs, device):
    """lse is the natural-log logsumexp of the scaled scores over the visible keys (-inf for a row
    that sees none), and asking for it leaves the output as it was (to rounding: the two are
    separately compiled specialisations, whose instruction order a compiler may choose apart)."""
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim,
        head_dim_v=head_dim_v, dtype=torch.float32, device=device,
    )  # fmt: skip
    out, lse = run_flash_into_nan(q, k, v, return_lse=True, **kwargs)
    ref_out, ref_lse = attention_reference(q, k, v, return_lse=True, **kwargs)
    assert lse.shape == (batch, n_q_heads, n_q) and lse.device == q.device
    assert_close(out, ref_out, rel_tol=FP32_REL_TOL)
    assert_lse_close(lse, ref_lse, rel_tol=FP32_REL_TOL)
    assert_close(run_flash_into_nan(q, k, v, **kwargs), out, rel_tol=1e-6, name="output without lse")


def test_flash_attention_causal_diagonal_at_every_key_offset(device):
    """Nk - Nq over every residue of the key block, so the diagonal of a full query block starts
    and ends at each position inside a key block: catches off-by-one loop bounds and mask splits."""
    block_m, block_n = block_config(16, torch.float32)[:2]
    n_q = block_m + 3
    for n_k in range(n_q - block_n, n_q + block_n + 2):
        q, k, v = attention_inputs(1, 2, 1, n_q, n_k, 16, dtype=torch.float32, device=device, seed=n_k)
        out = run_flash_into_nan(q, k, v, causal=True)
        assert_close(
            out, attention_reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL, name=f"Nq={n_q} Nk={n_k}"
        )


def test_flash_attention_query_rows_without_keys_are_zero(device):
    """Causal with Nq > Nk: the first Nq - Nk queries see no key and output exactly 0."""
    q, k, v = attention_inputs(1, 2, 1, 40, 10, 32, dtype=torch.float32, device=device)
    out = run_flash_into_nan(q, k, v, causal=True)
    assert torch.all(out[:, :, :30] == 0)
    assert_close(out, attention_reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_custom_scale(causal, device):
    q, k, v = attention_inputs(1, 4, 2, 37, 50, 48, dtype=torch.float32, device=device)
    out = run_flash_into_nan(q, k, v, causal=causal, scale=0.3)
    assert_close(out, attention_reference(q, k, v, causal=causal, scale=0.3), rel_tol=FP32_REL_TOL)


def test_flash_attention_non_contiguous_inputs_and_output(device):
    """q and out as [B, N, H, D] transposed, k and v as head_dim slices of wider rows."""
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim = 2, 4, 2, 37, 50, 32
    generator = torch.Generator().manual_seed(1)
    q = random_tensor(batch, n_q, n_q_heads, head_dim, device=device, generator=generator).transpose(1, 2)
    k = random_tensor(batch, n_kv_heads, n_k, 2 * head_dim, device=device, generator=generator)[
        ..., :head_dim
    ]
    v = random_tensor(batch, n_k, n_kv_heads, head_dim, device=device, generator=generator).transpose(1, 2)
    out = torch.full((batch, n_q, n_q_heads, head_dim), float("nan"), device=device).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous() or out.is_contiguous())
    run_flash_into_nan(q, k, v, out=out, causal=True)
    assert_close(out, attention_reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL)


def test_flash_attention_allocates_output_when_not_given(device):
    q, k, v = attention_inputs(1, 2, 1, 20, 30, 32, dtype=torch.float16, device=device)
    out = flash_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.float16 and out.device == q.device
    assert_close(out, attention_reference(q, k, v), rel_tol=HALF_REL_TOL[torch.float16])


HALF_SHAPES = [
    pytest.param((2, 4, 2, 50, 37, 64, 64, False), id="gqa2-full-b2"),
    pytest.param((1, 8, 2, 37, 100, 48, 48, True), id="gqa4-causal-nq<nk-d48"),
    pytest.param((1, 4, 4, 40, 40, 192, 128, True), id="mha-causal-mla-dqk192-dv128"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", HALF_SHAPES)
def test_flash_attention_half_precision(shape, dtype, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v, causal = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v=head_dim_v, dtype=dtype, device=device
    )
    out, lse = run_flash_into_nan(q, k, v, causal=causal, return_lse=True)
    ref_out, ref_lse = attention_reference(q, k, v, causal=causal, return_lse=True)
    assert_close(out, ref_out, rel_tol=HALF_REL_TOL[dtype])
    assert_lse_close(lse, ref_lse, rel_tol=HALF_LSE_REL_TOL)


@pytest.mark.parametrize("build, message", FLASH_INVALID)
def test_flash_attention_rejects_invalid_input(build, message, device):
    (q, k, v), kwargs = build(device)
    with pytest.raises(ValueError, match=message):
        flash_attention(q, k, v, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "n_q, n_k, causal",
    [
        pytest.param(2048, 2048, True, id="causal-2k"),
        pytest.param(1000, 3000, True, id="causal-nq<nk"),
        pytest.param(4096, 4096, False, id="full-4k"),
    ],
)
def test_flash_attention_gpu_realistic(n_q, n_k, causal, dtype):
    """Compiled kernel at serving shapes (H=32, Hkv=8, D=128) against a float32 GPU reference."""
    q, k, v = attention_inputs(2, 32, 8, n_q, n_k, 128, dtype=dtype, device="cuda")
    out = run_flash_into_nan(q, k, v, causal=causal)
    ref = attention(q.float(), k.float(), v.float(), causal=causal, query_chunk=256)
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "n_kv_heads, head_dim, head_dim_v",
    [
        pytest.param(16, 192, 128, id="mla-prefill-dqk192-dv128"),
        pytest.param(4, 128, 128, id="gqa4-d128"),
    ],
)
def test_flash_attention_gpu_lse(n_kv_heads, head_dim, head_dim_v, dtype):
    """Compiled kernel with return_lse (what the backward reads) at 16 query heads, 2k causal,
    against a float32 GPU reference."""
    q, k, v = attention_inputs(
        2, 16, n_kv_heads, 2048, 2048, head_dim, head_dim_v=head_dim_v, dtype=dtype, device="cuda"
    )
    out, lse = run_flash_into_nan(q, k, v, causal=True, return_lse=True)
    ref_out, ref_lse = attention(
        q.float(), k.float(), v.float(), causal=True, query_chunk=256, return_lse=True
    )
    assert_close(out, ref_out, rel_tol=GPU_REL_TOL[dtype])
    assert_lse_close(lse, ref_lse.cpu(), rel_tol=GPU_LSE_REL_TOL)
