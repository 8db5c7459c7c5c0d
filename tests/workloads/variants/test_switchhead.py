"""SwitchHead: per-head value and output projections as top-k mixtures of experts with sigmoid gates."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.reference import attention
from workloads.variants import get_variant

EXPERT_CASES = [
    pytest.param({"experts": 4, "top_k": 2}, id="e4-top2"),
    pytest.param({"experts": 3, "top_k": 1}, id="e3-top1"),
    pytest.param({"experts": 2, "top_k": 2}, id="e2-top2"),
]


@pytest.mark.parametrize("backend,phase", cases.offered_cases("switchhead"))
@pytest.mark.parametrize("params", EXPERT_CASES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_matches_reference(backend, phase, params, causal):
    trial = cases.make_trial("switchhead", params, backend=backend, phase=phase, causal=causal, head_dim=12)
    cases.assert_phase_matches_reference(trial)


def test_per_token_loop():
    """Values and outputs token by token: the top-k experts of each (token, head) by gate logit, σ-gated."""
    trial = cases.make_trial("switchhead", {"experts": 4, "top_k": 2}, n_heads=2, seq_len=5, head_dim=4)
    x = cases.as_float64(cases.make_inputs(trial))

    def mixed(vector, logits, experts):  # vector [M or D], logits [E], experts [E, in, out]
        picked = logits.topk(2).indices
        return sum(torch.sigmoid(logits[e]) * vector @ experts[e] for e in picked.tolist())

    values = torch.zeros(2, 2, 5, 4, dtype=torch.float64)  # [B, H, N, D]
    for b, j, h in torch.cartesian_prod(torch.arange(2), torch.arange(5), torch.arange(2)).tolist():
        values[b, h, j] = mixed(x["x"][b, j], x["v_gate_logits"][b, j, h], x["v_experts"][h])
    out = attention(x["q"], x["k"], values, causal=True)
    expected = torch.zeros(2, 5, 8, dtype=torch.float64)  # [B, N, d_model]
    for b, i, h in torch.cartesian_prod(torch.arange(2), torch.arange(5), torch.arange(2)).tolist():
        expected[b, i] += mixed(out[b, h, i], x["o_gate_logits"][b, i, h], x["o_experts"][h])
    assert_close(cases.run(trial, x), expected, rel_tol=1e-12)


def test_one_expert_is_gated_single_projections():
    """E = 1, top_k = 1: v_h = σ(gv) x W_v,h, then MHA, then y = Σ_h σ(go) o_h W_o,h."""
    trial = cases.make_trial("switchhead", {"experts": 1, "top_k": 1})
    x = cases.make_inputs(trial)
    v_gate, o_gate = torch.sigmoid(x["v_gate_logits"][..., 0]), torch.sigmoid(x["o_gate_logits"][..., 0])
    values = torch.einsum("bnm,hmd->bhnd", x["x"], x["v_experts"][:, 0]) * v_gate.transpose(1, 2)[..., None]
    out = attention(x["q"], x["k"], values, causal=True) * o_gate.transpose(1, 2)[..., None]  # [B, H, N, D]
    expected = torch.einsum("bhnd,hdm->bnm", out, x["o_experts"][:, 0])
    assert_close(cases.run(trial, x), expected, rel_tol=1e-5)


def test_layer_ends_in_d_model_without_an_output_projection():
    layer = cases.assert_layer_trains(
        "switchhead", {"experts": 3, "top_k": 2}, n_heads=2, n_kv_heads=2, head_dim=8
    )
    assert layer.out_proj is None and "x" not in layer.projections  # x is read as is
    assert set(layer.weights) == {"v_experts", "o_experts"}


def test_decode_is_unsupported():
    assert "no torch-ref implementation of phase decode" in get_variant("switchhead").unsupported(
        "torch-ref", "decode"
    )


@pytest.mark.parametrize(
    "params,message",
    [
        ({"experts": 0}, "experts: 0 must be at least 1"),
        ({"experts": 2, "top_k": 3}, r"top_k: 3 must be in \[1, experts=2\]"),
        ({"top_k": 0}, "top_k: 0 must be in"),
    ],
    ids=["no-experts", "top-k-above-experts", "top-k-zero"],
)
def test_params_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        get_variant("switchhead").check_params(params)


def test_cost_model():
    b, h, n, d, e, k = 2, 2, 100, 64, 4, 2
    m = h * d
    point = {"batch": b, "n_heads": h, "seq_len": n, "head_dim": d, "dtype": "bfloat16"}
    variant = get_variant("switchhead")
    trial = cases.make_trial("switchhead", {"experts": e, "top_k": k}, **point)
    cost = variant.cost(trial)
    assert cost.kv_bytes_per_token == 2 * h * d * 2  # K and the mixed V of each head
    attention_flops = 4 * b * h * n * (n + 1) / 2 * d
    assert cost.flops == pytest.approx(attention_flops + 2 * 2 * b * n * h * k * m * d)  # top-k experts
    elements = 2 * b * n * m + 2 * b * h * n * d + 2 * b * n * h * e + 2 * h * e * m * d  # x, y; q, k; gates
    assert cost.bytes_moved == 2 * elements
    assert cost.n_params == 2 * m * h * d + 2 * m * h * e + 2 * h * e * m * d  # no W_O of the layer's own
