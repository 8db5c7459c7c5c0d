"""flash_attention against the float64 reference: lengths off the block grid, GQA ratios, causal
alignment, head dims (also d_qk != d_v, MLA prefill), scale, strides, dtypes, the log-sum-exp
output, and input validation. Windows, sinks and Cog weighting: test_flash_attention_masks.py."""

import pytest
import torch

from kernels import flash_attention
from kernels.flash_attention import block_config
from tests.helpers import assert_close, random_tensor
from tests.kernels.invalid_inputs import replacing, with_kwargs
from workloads.reference import attention

FP32_REL_TOL = 1e-5
# Measured under the interpreter over every shape of both kernel test files in fp16 and bf16, 3 seeds
# and 1 or 3 splits: fp16 <= 2.9e-4, bf16 <= 5.6e-3.
# (The interpreter truncates fp32 -> bf16 where a GPU rounds to nearest, so bf16 reads high here.)
HALF_REL_TOL = {torch.float16: 5e-4, torch.bfloat16: 8e-3}
# lse stays fp32 from scores of the rounded inputs: measured <= 7e-8 in fp16 and bf16 (interpreter,
# 3 seeds, with and without windows).
HALF_LSE_REL_TOL = 1e-6
# Not yet measured on a GPU: DESIGN.md §4's typical bounds until a GPU session records real numbers.
GPU_REL_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
GPU_LSE_REL_TOL = 1e-5  # fp32 sums and the GPU's approximate exp2, not yet measured


def make_inputs(batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, *, head_dim_v=None, dtype, device, seed=0):
    """q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (Dv = D unless given), standard
    normal, contiguous."""
    generator = torch.Generator().manual_seed(seed)
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    q = random_tensor(batch, n_q_heads, n_q, head_dim, dtype=dtype, device=device, generator=generator)
    k = random_tensor(batch, n_kv_heads, n_k, head_dim, dtype=dtype, device=device, generator=generator)
    v = random_tensor(batch, n_kv_heads, n_k, head_dim_v, dtype=dtype, device=device, generator=generator)
    return q, k, v


def reference(q, k, v, **kwargs):
    """The float64 CPU reference on the very values the kernel saw."""
    return attention(*(t.detach().cpu().double() for t in (q, k, v)), **kwargs)


def run_into_nan(q, k, v, out=None, **kwargs):
    """flash_attention writing into an output [B, Hq, Nq, Dv] pre-filled with NaN, so an unwritten
    tile fails. Returns what flash_attention returns: out, or (out, lse) with return_lse."""
    if out is None:
        out = torch.full((*q.shape[:3], v.shape[3]), float("nan"), dtype=q.dtype, device=q.device)
    result = flash_attention(q, k, v, out=out, **kwargs)
    assert (result[0] if kwargs.get("return_lse") else result) is out
    return result


def assert_lse_close(lse, ref_lse, *, rel_tol):
    """float32 [B, Hq, Nq]; -inf exactly where the reference has it (rows without keys), the
    finite rest within rel_tol."""
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    no_key = ref_lse == float("-inf")
    assert torch.equal(lse.cpu() == float("-inf"), no_key), "lse: -inf rows differ from the reference"
    assert_close(lse.cpu()[~no_key], ref_lse[~no_key], rel_tol=rel_tol, name="lse")


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
    q, k, v = make_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, dtype=torch.float32, device=device
    )
    out = run_into_nan(q, k, v, causal=causal)
    assert_close(out, reference(q, k, v, causal=causal), rel_tol=FP32_REL_TOL)


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
    q, k, v = make_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim,
        head_dim_v=head_dim_v, dtype=torch.float32, device=device,
    )  # fmt: skip
    out = run_into_nan(q, k, v, causal=causal)
    assert out.shape == (batch, n_q_heads, n_q, head_dim_v)
    assert_close(out, reference(q, k, v, causal=causal), rel_tol=FP32_REL_TOL)


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
    q, k, v = make_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim,
        head_dim_v=head_dim_v, dtype=torch.float32, device=device,
    )  # fmt: skip
    out, lse = run_into_nan(q, k, v, return_lse=True, **kwargs)
    ref_out, ref_lse = reference(q, k, v, return_lse=True, **kwargs)
    assert lse.shape == (batch, n_q_heads, n_q) and lse.device == q.device
    assert_close(out, ref_out, rel_tol=FP32_REL_TOL)
    assert_lse_close(lse, ref_lse, rel_tol=FP32_REL_TOL)
    assert_close(run_into_nan(q, k, v, **kwargs), out, rel_tol=1e-6, name="output without lse")


def test_flash_attention_causal_diagonal_at_every_key_offset(device):
    """Nk - Nq over every residue of the key block, so the diagonal of a full query block starts
    and ends at each position inside a key block: catches off-by-one loop bounds and mask splits."""
    block_m, block_n = block_config(16, torch.float32)[:2]
    n_q = block_m + 3
    for n_k in range(n_q - block_n, n_q + block_n + 2):
        q, k, v = make_inputs(1, 2, 1, n_q, n_k, 16, dtype=torch.float32, device=device, seed=n_k)
        out = run_into_nan(q, k, v, causal=True)
        assert_close(out, reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL, name=f"Nq={n_q} Nk={n_k}")


def test_flash_attention_query_rows_without_keys_are_zero(device):
    """Causal with Nq > Nk: the first Nq - Nk queries see no key and output exactly 0."""
    q, k, v = make_inputs(1, 2, 1, 40, 10, 32, dtype=torch.float32, device=device)
    out = run_into_nan(q, k, v, causal=True)
    assert torch.all(out[:, :, :30] == 0)
    assert_close(out, reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_custom_scale(causal, device):
    q, k, v = make_inputs(1, 4, 2, 37, 50, 48, dtype=torch.float32, device=device)
    out = run_into_nan(q, k, v, causal=causal, scale=0.3)
    assert_close(out, reference(q, k, v, causal=causal, scale=0.3), rel_tol=FP32_REL_TOL)


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
    run_into_nan(q, k, v, out=out, causal=True)
    assert_close(out, reference(q, k, v, causal=True), rel_tol=FP32_REL_TOL)


def test_flash_attention_allocates_output_when_not_given(device):
    q, k, v = make_inputs(1, 2, 1, 20, 30, 32, dtype=torch.float16, device=device)
    out = flash_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.float16 and out.device == q.device
    assert_close(out, reference(q, k, v), rel_tol=HALF_REL_TOL[torch.float16])


HALF_SHAPES = [
    pytest.param((2, 4, 2, 50, 37, 64, 64, False), id="gqa2-full-b2"),
    pytest.param((1, 8, 2, 37, 100, 48, 48, True), id="gqa4-causal-nq<nk-d48"),
    pytest.param((1, 4, 4, 40, 40, 192, 128, True), id="mha-causal-mla-dqk192-dv128"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", HALF_SHAPES)
def test_flash_attention_half_precision(shape, dtype, device):
    batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v, causal = shape
    q, k, v = make_inputs(
        batch, n_q_heads, n_kv_heads, n_q, n_k, head_dim, head_dim_v=head_dim_v, dtype=dtype, device=device
    )
    out, lse = run_into_nan(q, k, v, causal=causal, return_lse=True)
    ref_out, ref_lse = reference(q, k, v, causal=causal, return_lse=True)
    assert_close(out, ref_out, rel_tol=HALF_REL_TOL[dtype])
    assert_lse_close(lse, ref_lse, rel_tol=HALF_LSE_REL_TOL)


def _valid(device, dtype=torch.float32):
    return make_inputs(1, 4, 2, 8, 8, 32, dtype=dtype, device=device)


def _replace(index, tensor_fn):
    """Valid inputs with q, k or v (index 0, 1, 2) replaced by tensor_fn(device)."""
    return replacing(_valid, index, tensor_fn)


def _with_kwargs(**kwargs):
    return with_kwargs(_valid, **kwargs)


INVALID = [
    pytest.param(_replace(0, lambda d: torch.randn(4, 8, 32, device=d)), "q must have rank 4", id="q-rank3"),
    pytest.param(
        _replace(1, lambda d: torch.randn(2, 2, 8, 32, device=d)), "k has batch 2 but q has 1", id="k-batch"
    ),
    pytest.param(
        _replace(1, lambda d: torch.randn(1, 2, 8, 64, device=d)),
        "k has head_dim 64 but q has 32",
        id="k-head-dim",
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(1, 2, 9, 32, device=d)),
        "v has seq_len 9 but k has 8",
        id="v-seq-len",
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(1, 1, 8, 32, device=d)), "v has heads 1 but k has 2", id="v-heads"
    ),
    pytest.param(
        _replace(0, lambda d: torch.randn(1, 3, 8, 32, device=d)),
        "q has 3 heads, not a multiple",
        id="hq-not-multiple",
    ),
    pytest.param(_replace(0, lambda d: torch.randn(1, 4, 0, 32, device=d)), "q has seq_len 0", id="empty-q"),
    pytest.param(
        lambda d: (make_inputs(1, 2, 2, 8, 0, 32, dtype=torch.float32, device=d), {}),
        "k has seq_len 0",
        id="empty-k",
    ),
    pytest.param(
        lambda d: (make_inputs(1, 2, 2, 8, 8, 8, dtype=torch.float32, device=d), {}),
        "head_dim 8 is outside",
        id="head-dim-8",
    ),
    pytest.param(
        lambda d: (make_inputs(1, 2, 2, 8, 8, 264, dtype=torch.float32, device=d), {}),
        "head_dim 264 is outside",
        id="head-dim-264",
    ),
    pytest.param(
        lambda d: (_valid(d, torch.float64), {}), "q has dtype torch.float64, expected one of", id="float64"
    ),
    pytest.param(
        _replace(1, lambda d: torch.randn(1, 2, 8, 32, device=d).half()),
        "k has dtype torch.float16 but q has torch.float32",
        id="mixed-dtypes",
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(1, 2, 8, 32, device="meta")),
        "v is on meta but q is on",
        id="mixed-devices",
    ),
    pytest.param(lambda d: (_valid("meta"), {}), "tensors are on meta", id="unsupported-device"),
    pytest.param(
        _with_kwargs(out=lambda d: torch.empty(1, 4, 8, 16, device=d)), "out has shape", id="out-shape"
    ),
    pytest.param(
        _with_kwargs(out=lambda d: torch.empty(1, 4, 8, 32, device=d).half()), "out has dtype", id="out-dtype"
    ),
    pytest.param(_with_kwargs(scale=float("nan")), "scale must be a finite float", id="scale-nan"),
    pytest.param(
        _replace(2, lambda d: torch.randn(1, 2, 8, 8, device=d)), "v has head_dim 8, outside", id="dv-8"
    ),
    pytest.param(
        _replace(2, lambda d: torch.randn(1, 2, 8, 264, device=d)), "v has head_dim 264, outside", id="dv-264"
    ),
    pytest.param(
        lambda d: (
            make_inputs(1, 2, 2, 8, 8, 32, head_dim_v=48, dtype=torch.float32, device=d),
            {"out": torch.empty(1, 2, 8, 32, device=d)},
        ),
        r"out has shape \(1, 2, 8, 32\), expected \(1, 2, 8, 48\)",
        id="out-shape-not-dv",
    ),
    pytest.param(_with_kwargs(window=4), "window requires causal=True", id="window-without-causal"),
    pytest.param(
        _with_kwargs(causal=True, window=lambda d: torch.full((3,), 4, dtype=torch.int32, device=d)),
        "window has heads 3 but k has 2",
        id="window-shape",
    ),
    pytest.param(
        _with_kwargs(causal=True, window=lambda d: torch.full((2,), 4, dtype=torch.int64, device=d)),
        "window has dtype torch.int64, expected torch.int32",
        id="window-int64",
    ),
    pytest.param(
        _with_kwargs(causal=True, window=lambda d: torch.full((2,), 4, dtype=torch.int32, device="meta")),
        "window is on meta but q is on",
        id="window-device",
    ),
    pytest.param(
        _with_kwargs(causal=True, window=4.0),
        "window must be None, an int or an int32 tensor",
        id="window-float",
    ),
    pytest.param(
        _with_kwargs(causal=True, window=4, sink=-1), "sink must be an int >= 0", id="sink-negative"
    ),
    pytest.param(
        _with_kwargs(causal=True, window=lambda d: torch.full((2, 1), 4, dtype=torch.int32, device=d)),
        "window must have rank 1",
        id="window-rank2",
    ),
    pytest.param(
        _with_kwargs(causal=True, window=True),
        "window must be None, an int or an int32 tensor",
        id="window-bool",
    ),
    pytest.param(
        _with_kwargs(weighting="relu"), "weighting must be one of softmax, cog", id="weighting-relu"
    ),
    pytest.param(
        _with_kwargs(weighting="cog", return_lse=True),
        "return_lse needs weighting='softmax'",
        id="lse-with-cog",
    ),
]


@pytest.mark.parametrize("build, message", INVALID)
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
    q, k, v = make_inputs(2, 32, 8, n_q, n_k, 128, dtype=dtype, device="cuda")
    out = run_into_nan(q, k, v, causal=causal)
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
    q, k, v = make_inputs(
        2, 16, n_kv_heads, 2048, 2048, head_dim, head_dim_v=head_dim_v, dtype=dtype, device="cuda"
    )
    out, lse = run_into_nan(q, k, v, causal=True, return_lse=True)
    ref_out, ref_lse = attention(
        q.float(), k.float(), v.float(), causal=True, query_chunk=256, return_lse=True
    )
    assert_close(out, ref_out, rel_tol=GPU_REL_TOL[dtype])
    assert_lse_close(lse, ref_lse.cpu(), rel_tol=GPU_LSE_REL_TOL)
