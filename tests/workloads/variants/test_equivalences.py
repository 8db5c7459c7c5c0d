"""Variants tied to each other: each special case must reproduce the plainer variant exactly."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants.cases import make_inputs, make_trial, run
from workloads.backends import IMPLEMENTED_BACKENDS
from workloads.reference import attention
from workloads.variants.moh import _gated


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("backend", IMPLEMENTED_BACKENDS)
def test_gqa_with_one_query_head_per_kv_head_is_mha(backend, phase):
    gqa = make_trial("gqa", backend=backend, phase=phase, n_kv_heads=4)
    mha = make_trial("mha", backend=backend, phase=phase)
    inputs = make_inputs(mha)
    assert_close(run(gqa, inputs), run(mha, inputs), rel_tol=1e-6)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("backend", IMPLEMENTED_BACKENDS)
def test_pruned_keeping_every_head_is_mha(backend, phase):
    pruned = make_trial("pruned", {"keep_heads": 1.0}, backend=backend, phase=phase)
    mha = make_trial("mha", backend=backend, phase=phase)
    inputs = make_inputs(mha)
    assert_close(run(pruned, inputs), run(mha, inputs), rel_tol=1e-6)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("backend", IMPLEMENTED_BACKENDS)
def test_streaming_heads_with_a_window_covering_the_sequence_are_full_attention(backend, phase):
    params = {"sink": 3, "window": 19, "retrieval_heads": 0.0}  # every head streaming, window = seq_len
    streaming = make_trial("streaming", params, backend=backend, phase=phase)
    gqa = make_trial("gqa", backend=backend, phase=phase)
    inputs = {**make_inputs(gqa), "kv_windows": make_inputs(streaming)["kv_windows"]}
    assert_close(run(streaming, inputs), run(gqa, inputs), rel_tol=1e-6)


@pytest.mark.parametrize("backend", IMPLEMENTED_BACKENDS)
def test_moba_selecting_every_block_is_causal_attention(backend):
    moba = make_trial("moba", {"block_size": 5, "top_k": 4}, backend=backend)  # 19 keys: 4 blocks
    gqa = make_trial("gqa", backend=backend)
    inputs = make_inputs(gqa)
    assert_close(run(moba, inputs), run(gqa, inputs), rel_tol=1e-6)


@pytest.mark.parametrize("backend", ["torch-ref", "triton"])
def test_moh_with_every_head_on_and_equal_gates_is_mha(backend):
    """Gates of 1 for every (token, head): the routed kernel and the gated reference are MHA."""
    mha = make_trial("mha", backend="torch-ref")
    x = make_inputs(mha)
    gates = torch.ones(2, 19, 4)  # [B, N, H]
    if backend == "triton":
        from workloads.backends import load_kernels

        out = load_kernels().moh_attention(x["q"], x["k"], x["v"], gates, causal=True)
    else:
        out = _gated(attention(x["q"], x["k"], x["v"], causal=True), gates)
    assert_close(out, run(mha, x), rel_tol=1e-6)


@pytest.mark.parametrize("backend", [b for b in IMPLEMENTED_BACKENDS if b != "flex"])  # flex: prefill only
def test_mla_absorbed_decode_is_the_up_projected_math(backend):
    """Decode on the latent cache with W_UK absorbed into q equals up-projecting every head's K and V."""
    params = {"latent_dim": 40, "rope_dim": 8}
    decode = make_trial("mla", params, backend=backend, phase="decode", n_heads=8, seq_len=23)
    inputs = make_inputs(decode)
    latent = inputs["kv_latent_cache"]  # [B, 1, L, d_c + d_R]
    k_nope = torch.einsum("bxnc,hdc->bhnd", latent[..., :40], inputs["w_uk"])
    values = torch.einsum("bxnc,hdc->bhnd", latent[..., :40], inputs["w_uv"])
    keys = torch.cat([k_nope, latent[..., 40:].expand(-1, 8, -1, -1)], dim=-1)
    expected = attention(
        inputs["q"][:, :, None].double(), keys.double(), values.double(), scale=(16 + 8) ** -0.5
    )
    assert_close(run(decode, inputs), expected[:, :, 0], rel_tol=1e-5)
