"""moh_attention against the float64 reference times the gates: random and MoH-routed active sets,
all heads on, heads and tokens with nothing active, causal alignment, GQA ratios, head dims, gate
dtypes, strides, and input validation."""

import pytest
import torch

from kernels.flash_attention import block_config
from kernels.moh_attention import compact_active_tokens, moh_attention
from tests.helpers import assert_close
from tests.kernels.cases import FP32_REL_TOL, GPU_REL_TOL, HALF_REL_TOL, attention_inputs, random_gates
from tests.kernels.invalid_inputs import MOH_INVALID
from workloads.reference import attention


def routed_gates(batch, n_q, n_heads, n_shared, top_k, *, device="cpu", seed=0):
    """gates [B, Nq, H] as MoH routes: the first n_shared heads always on with weight α1 / n_shared,
    top_k of the others with α2 · their router softmax renormalised over the top_k; [α1, α2] =
    2·softmax(two per-token logits). Random logits stand in for W_r x and W_h x."""
    generator = torch.Generator().manual_seed(seed + 2000)
    router_logits = torch.randn(batch, n_q, n_heads - n_shared, generator=generator)
    stage_weights = 2 * torch.softmax(torch.randn(batch, n_q, 2, generator=generator), dim=-1)
    top_probs, top_heads = torch.softmax(router_logits, dim=-1).topk(top_k, dim=-1)
    routed = torch.zeros_like(router_logits).scatter(
        -1, top_heads, top_probs / top_probs.sum(-1, keepdim=True)
    )
    shared = (stage_weights[..., :1] / n_shared).expand(batch, n_q, n_shared)
    return torch.cat([shared, stage_weights[..., 1:] * routed], dim=-1).to(device)


def reference(q, k, v, gates, **kwargs):
    """The float64 CPU reference on the very values the kernel saw, times gates as [B, H, Nq, 1]."""
    q64, k64, v64, gates64 = (t.detach().cpu().double() for t in (q, k, v, gates))
    return attention(q64, k64, v64, **kwargs) * gates64.transpose(1, 2)[..., None]


def run_into_nan(q, k, v, gates, out=None, **kwargs):
    """moh_attention writing into an output pre-filled with NaN, so an unwritten row fails."""
    if out is None:
        out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    result = moh_attention(q, k, v, gates, out=out, **kwargs)
    assert result is out
    return out


def assert_inactive_zero(out, gates):
    """Every (b, h, i) whose gate is 0 is exactly 0, not merely small."""
    inactive = (gates == 0).transpose(1, 2)  # [B, H, Nq]
    assert torch.all(out[inactive] == 0), "an inactive (token, head) row is not exactly 0"


def check_against_reference(q, k, v, gates, *, rel_tol=FP32_REL_TOL, name="output", out=None, **kwargs):
    """moh_attention into a NaN-filled output: inactive rows exactly 0, the rest close to the reference."""
    out = run_into_nan(q, k, v, gates, out, **kwargs)
    assert_inactive_zero(out, gates)
    assert_close(out, reference(q, k, v, gates, **kwargs), rel_tol=rel_tol, name=name)
    return out


# (batch, H, Hkv, N, head_dim, density, causal). Interpreted tiles are 32 queries × 16 keys.
FP32_SHAPES = [
    pytest.param((1, 2, 2, 45, 32, 0.5, True), id="mha-causal-n45-density50"),
    pytest.param((2, 4, 2, 37, 24, 0.25, True), id="gqa2-causal-b2-n37-d24-density25"),
    pytest.param((1, 8, 2, 50, 48, 0.75, False), id="gqa4-full-n50-d48-density75"),
    pytest.param((1, 3, 1, 33, 80, 1.0, True), id="mqa3-causal-n33-d80-density100"),
    pytest.param((3, 2, 1, 70, 64, 0.25, True), id="mqa2-causal-b3-n70-density25"),
    pytest.param((1, 2, 2, 29, 96, 0.5, False), id="mha-full-n29-d96-density50"),
    pytest.param((1, 1, 1, 150, 16, 0.1, True), id="mha-causal-n150-sparse-tiles-density10"),
    pytest.param((1, 2, 1, 64, 128, 0.6, True), id="mqa2-causal-n64-block-multiple-d128"),
]


@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_moh_attention_fp32_matches_reference(shape, device):
    batch, n_heads, n_kv_heads, n, head_dim, density, causal = shape
    q, k, v = attention_inputs(batch, n_heads, n_kv_heads, n, n, head_dim, dtype=torch.float32, device=device)
    gates = random_gates(batch, n, n_heads, density, device=device)
    check_against_reference(q, k, v, gates, causal=causal)


def test_moh_attention_moh_routing_shared_plus_top_k(device):
    """2 shared heads always on plus the top-2 of 6 routed heads per token, GQA 4."""
    q, k, v = attention_inputs(2, 8, 2, 53, 53, 40, dtype=torch.float32, device=device)
    gates = routed_gates(2, 53, 8, n_shared=2, top_k=2, device=device)
    assert torch.all((gates != 0).sum(-1) == 4)
    check_against_reference(q, k, v, gates, causal=True)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_moh_attention_all_heads_on_is_plain_attention(causal, device):
    q, k, v = attention_inputs(2, 4, 2, 41, 41, 32, dtype=torch.float32, device=device)
    gates = torch.ones(2, 41, 4, device=device)
    out = run_into_nan(q, k, v, gates, causal=causal)
    plain = attention(*(t.double() for t in (q.cpu(), k.cpu(), v.cpu())), causal=causal)
    assert_close(out, plain, rel_tol=FP32_REL_TOL)


def test_moh_attention_head_with_no_token_and_token_with_no_head(device):
    q, k, v = attention_inputs(2, 4, 2, 39, 39, 32, dtype=torch.float32, device=device)
    gates = random_gates(2, 39, 4, 0.6, device=device)
    gates[0, :, 1] = 0  # head 1 of sequence 0 is picked by no token
    gates[:, 17, :] = 0  # token 17 picks no head
    gates[1, :, 3] = 0
    out = check_against_reference(q, k, v, gates, causal=True)
    assert torch.all(out[0, 1] == 0) and torch.all(out[1, 3] == 0) and torch.all(out[:, :, 17] == 0)


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # the interpreter's row max over NaN
def test_moh_attention_ignores_query_rows_of_inactive_pairs(device):
    """A caller may leave the queries of unrouted (token, head) pairs unwritten: NaN there must
    not leak, not even into the active rows that share a tile with them."""
    q, k, v = attention_inputs(2, 4, 2, 45, 45, 32, dtype=torch.float32, device=device)
    gates = random_gates(2, 45, 4, 0.5, device=device)
    q_unwritten = q.masked_fill((gates == 0).transpose(1, 2)[..., None], float("nan"))
    out = run_into_nan(q_unwritten, k, v, gates, causal=True)
    assert_inactive_zero(out, gates)
    assert_close(out, reference(q, k, v, gates, causal=True), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_moh_attention_no_active_pair_gives_zeros(causal, device):
    """Every tile is past its count: every program writes zeros and exits."""
    q, k, v = attention_inputs(2, 2, 1, 45, 45, 32, dtype=torch.float32, device=device)
    out = run_into_nan(q, k, v, torch.zeros(2, 45, 2, device=device), causal=causal)
    assert torch.all(out == 0)


@pytest.mark.parametrize(
    "n_q, n_k",
    [pytest.param(37, 100, id="nq<nk"), pytest.param(50, 20, id="nq>nk-rows-without-keys")],
)
def test_moh_attention_causal_aligns_bottom_right(n_q, n_k, device):
    q, k, v = attention_inputs(1, 4, 2, n_q, n_k, 32, dtype=torch.float32, device=device)
    gates = random_gates(1, n_q, 4, 0.5, device=device)
    check_against_reference(q, k, v, gates, causal=True)


def test_moh_attention_causal_tile_edges_at_every_key_offset(device):
    """A contiguous run of active tokens starting at every residue of the key block, so the
    tile's first and last positions fall at each place inside a key block: catches off-by-one
    bounds of the unmasked and masked key ranges."""
    block_m, block_n = block_config(16, torch.float32)[:2]
    n = 2 * block_m + block_n
    q, k, v = attention_inputs(1, block_n, 1, n, n, 16, dtype=torch.float32, device=device)
    gates = torch.zeros(1, n, block_n, device=device)
    for head in range(block_n):  # head h: tokens [h + 3, h + 3 + block_m + 5) active
        gates[0, head + 3 : head + 3 + block_m + 5, head] = 0.5 + head / block_n
    check_against_reference(q, k, v, gates, causal=True)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_moh_attention_custom_scale(causal, device):
    q, k, v = attention_inputs(1, 4, 2, 37, 37, 48, dtype=torch.float32, device=device)
    gates = random_gates(1, 37, 4, 0.5, device=device)
    check_against_reference(q, k, v, gates, causal=causal, scale=0.3)


def test_moh_attention_non_contiguous_inputs_gates_and_output(device):
    """q and out as [B, N, H, D] transposed, k as head_dim slices of wider rows, gates as a
    transposed [B, H, N] router output."""
    batch, n_heads, n_kv_heads, n, head_dim = 2, 4, 2, 37, 32
    q, _, v = attention_inputs(batch, n_heads, n_kv_heads, n, n, head_dim, dtype=torch.float32, device=device)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)
    k = attention_inputs(batch, n_heads, n_kv_heads, n, n, 2 * head_dim, dtype=torch.float32, device=device)[
        1
    ]
    k = k[..., :head_dim]
    gates = random_gates(batch, n_heads, n, 0.5, device=device).transpose(1, 2)  # [B, N, H] view
    out = torch.full((batch, n, n_heads, head_dim), float("nan"), device=device).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or gates.is_contiguous() or out.is_contiguous())
    check_against_reference(q, k, v, gates, out=out, causal=True)


@pytest.mark.parametrize(
    "dtype, gate_dtype",
    [
        pytest.param(torch.float32, torch.bfloat16, id="fp32-bf16-gates"),
        pytest.param(torch.float32, torch.float64, id="fp32-fp64-gates"),
        pytest.param(torch.float16, torch.float32, id="fp16-fp32-gates"),
    ],
)
def test_moh_attention_gates_in_any_float_dtype(dtype, gate_dtype, device):
    q, k, v = attention_inputs(1, 4, 2, 33, 33, 32, dtype=dtype, device=device)
    gates = random_gates(1, 33, 4, 0.5, dtype=gate_dtype, device=device)
    rel_tol = FP32_REL_TOL if dtype == torch.float32 else HALF_REL_TOL[dtype]
    check_against_reference(q, k, v, gates, causal=True, rel_tol=rel_tol)


def test_moh_attention_allocates_output_when_not_given(device):
    q, k, v = attention_inputs(1, 2, 1, 20, 20, 32, dtype=torch.bfloat16, device=device)
    gates = random_gates(1, 20, 2, 0.5, device=device)
    out = moh_attention(q, k, v, gates)
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and out.device == q.device
    assert_inactive_zero(out, gates)
    assert_close(out, reference(q, k, v, gates, causal=True), rel_tol=HALF_REL_TOL[torch.bfloat16])


HALF_SHAPES = [
    pytest.param((2, 4, 2, 50, 64, 0.5, True), id="gqa2-causal-b2-n50-density50"),
    pytest.param((1, 8, 2, 37, 48, 0.25, False), id="gqa4-full-n37-d48-density25"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", HALF_SHAPES)
def test_moh_attention_half_precision(shape, dtype, device):
    batch, n_heads, n_kv_heads, n, head_dim, density, causal = shape
    q, k, v = attention_inputs(batch, n_heads, n_kv_heads, n, n, head_dim, dtype=dtype, device=device)
    gates = random_gates(batch, n, n_heads, density, dtype=dtype, device=device)
    check_against_reference(q, k, v, gates, causal=causal, rel_tol=HALF_REL_TOL[dtype])


def test_compact_active_tokens_lists_active_positions_in_order_then_the_rest():
    gates = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [3.0, 4.0], [0.5, 0.0]]])  # [1, 5, 2]
    token_order, n_active = compact_active_tokens(gates)
    assert token_order.dtype == torch.int32 and n_active.dtype == torch.int32
    assert n_active.tolist() == [[3, 2]]
    assert token_order.tolist() == [[[1, 3, 4, 0, 2], [0, 3, 1, 2, 4]]]


@pytest.mark.parametrize("build, message", MOH_INVALID)
def test_moh_attention_rejects_invalid_input(build, message, device):
    (q, k, v, gates), kwargs = build(device)
    with pytest.raises(ValueError, match=message):
        moh_attention(q, k, v, gates, **kwargs)


def gpu_reference(q, k, v, gates, *, causal):
    """float32 GPU reference in query chunks (no [N, N] tensor at these lengths), times the gates."""
    ref = attention(q.float(), k.float(), v.float(), causal=causal, query_chunk=512)
    return ref * gates.float().transpose(1, 2)[..., None]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "n, causal, density",
    [
        pytest.param(4096, True, 0.25, id="causal-4k-density25"),
        pytest.param(8192, True, 0.5, id="causal-8k-density50"),
        pytest.param(4096, False, 0.75, id="full-4k-density75"),
    ],
)
def test_moh_attention_gpu_random_active_sets(n, causal, density, dtype):
    """Compiled kernel at serving shapes (H=32, Hkv=8, D=128) against a float32 GPU reference."""
    q, k, v = attention_inputs(2, 32, 8, n, n, 128, dtype=dtype, device="cuda")
    gates = random_gates(2, n, 32, density, dtype=dtype, device="cuda")
    out = run_into_nan(q, k, v, gates, causal=causal)
    assert_inactive_zero(out, gates)
    assert_close(out, gpu_reference(q, k, v, gates, causal=causal), rel_tol=GPU_REL_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("n", [4096, 8191], ids=["4k", "8k-odd"])
def test_moh_attention_gpu_moh_routing_bf16(n):
    """MoH routing (4 shared + top-8 of 28 routed heads), GQA 4, head dim 96, bf16 gates."""
    q, k, v = attention_inputs(1, 32, 8, n, n, 96, dtype=torch.bfloat16, device="cuda")
    gates = routed_gates(1, n, 32, n_shared=4, top_k=8, device="cuda").to(torch.bfloat16)
    out = run_into_nan(q, k, v, gates, causal=True)
    assert_inactive_zero(out, gates)
    assert_close(out, gpu_reference(q, k, v, gates, causal=True), rel_tol=GPU_REL_TOL[torch.bfloat16])
