"""MoA: top-k of n_heads query/output experts per token over one shared K/V head."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant
from workloads.variants.routing import top_k_gates


@pytest.mark.parametrize("backend,phase", cases.offered_cases("moa"))
@pytest.mark.parametrize("top_k", [1, 2, 4], ids=["top1", "top2", "top4"])
def test_matches_reference(backend, phase, top_k):
    trial = cases.make_trial("moa", {"top_k": top_k}, backend=backend, phase=phase, head_dim=12)
    # A top-1 gate renormalised over itself is 1: the router gets no gradient (moa.py).
    cases.assert_phase_matches_reference(trial, zero_ok=("router_logits",) if top_k == 1 else ())


def test_top_1_gate_is_one():
    trial = cases.make_trial("moa", {"top_k": 1}, phase="train")
    grads = cases.assert_gradients_match_reference(trial, zero_ok=("router_logits",))
    assert not grads["router_logits"].any()


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_every_expert_with_equal_logits_is_mqa_over_e(phase):
    trial = cases.make_trial("moa", {"top_k": 4}, phase=phase, n_heads=4)
    x = cases.make_inputs(trial)
    x["router_logits"] = torch.zeros_like(x["router_logits"])
    mqa = cases.make_trial("mqa", phase=phase, n_heads=4)
    expected = cases.run(mqa, {name: value for name, value in x.items() if name != "router_logits"}) / 4
    assert_close(cases.run(trial, x), expected, rel_tol=1e-6)


def test_per_token_routing_loop():
    """Each token by hand: its two highest logits, softmax over those two, MQA output of those heads."""
    trial = cases.make_trial("moa", {"top_k": 2}, n_heads=5, seq_len=6)
    x = cases.as_float64(cases.make_inputs(trial))
    attended = cases.run(cases.make_trial("mqa", n_heads=5, seq_len=6), {n: x[n] for n in ("q", "k", "v")})
    expected = torch.zeros_like(attended)  # [B, E, N, D]
    for b in range(2):
        for i in range(6):
            logits = x["router_logits"][b, i]
            picked = sorted(range(5), key=lambda e: -logits[e].item())[:2]
            gates = torch.softmax(logits[picked], dim=0)
            for gate, e in zip(gates, picked, strict=True):
                expected[b, e, i] = gate * attended[b, e, i]
    assert_close(cases.run(trial, x), expected, rel_tol=1e-12)


def test_top_k_gates():
    logits = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    softmax = top_k_gates(logits, 2, "softmax")
    assert ((softmax > 0).sum(-1) == 2).all()
    assert_close(softmax.sum(-1), torch.ones(3, 7), rel_tol=1e-6)  # renormalised over the top-k
    sigmoid = top_k_gates(logits, 3, "sigmoid")
    picked = logits.topk(3, dim=-1).indices
    # σ of the picked slice against σ of the whole tensor: two vectorised paths whose last bits differ
    # with the CPU's vector width, so close, not equal (a renormalised or wrong gate is off by far more).
    assert_close(sigmoid.gather(-1, picked), torch.sigmoid(logits).gather(-1, picked), rel_tol=1e-6)
    assert ((sigmoid > 0).sum(-1) == 3).all()
    with pytest.raises(ValueError, match="gate kind 'relu'"):
        top_k_gates(logits, 1, "relu")


def test_layer_trains_and_counts_its_parameters():
    layer = cases.assert_layer_trains("moa", {"top_k": 2}, n_heads=4, n_kv_heads=2, head_dim=8)
    assert layer.projections["k"].out_features == 8  # one shared K head whatever n_kv_heads says


def test_invalid_points_and_params():
    cases.assert_invalid_point("moa", "n_heads", {"top_k": 5}, match="top_k=5", n_heads=4)
    with pytest.raises(ValueError, match="top_k: 0 must be at least 1"):
        get_variant("moa").check_params({"top_k": 0})
    assert cases.make_trial("moa", n_kv_heads=4).n_kv_heads == 1  # one K/V head: the axis is ignored


def test_cost_model():
    b, h, n, d, k = 2, 8, 100, 64, 2
    point = {"batch": b, "n_heads": h, "seq_len": n, "head_dim": d, "dtype": "bfloat16"}
    variant = get_variant("moa")
    cost = variant.cost(cases.make_trial("moa", {"top_k": k}, **point))
    assert cost.kv_bytes_per_token == 2 * d * 2  # one K/V head, bf16
    assert cost.flops == pytest.approx(4 * b * k * n * (n + 1) / 2 * d)  # top_k experts per token
    assert cost.bytes_moved == 2 * (
        2 * b * k * n * d + 2 * b * n * d + b * n * h
    )  # q, o of top-k; k, v; router
    decode = variant.cost(cases.make_trial("moa", {"top_k": k}, phase="decode", **point))
    assert decode.flops == pytest.approx(4 * b * k * n * d)
    assert decode.bytes_moved == 2 * (2 * b * k * d + 2 * b * n * d + b * h)
    assert cost.n_params == 2 * (h * d) ** 2 + 2 * h * d * d + h * d * h  # W_q, W_o; k, v; router
