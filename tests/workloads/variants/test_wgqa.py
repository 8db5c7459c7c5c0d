"""Weighted GQA: per-head keys and values pooled per group with learned weights, then GQA."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant
from workloads.variants.layer import build_layer


@pytest.mark.parametrize("backend,phase", cases.offered_cases("wgqa"))
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4], ids=["mqa", "gqa2", "mha"])
def test_matches_reference(backend, phase, n_kv_heads):
    trial = cases.make_trial("wgqa", backend=backend, phase=phase, n_kv_heads=n_kv_heads, head_dim=20)
    cases.assert_phase_matches_reference(trial)


def test_per_group_loop():
    """K_g, V_g pooled by hand (mean of w[h]·k_h over the group's heads), then GQA on them."""
    trial = cases.make_trial("wgqa", n_heads=6, n_kv_heads=2, seq_len=7)
    x = cases.as_float64(cases.make_inputs(trial))
    pooled = {}
    for name in ("k", "v"):
        weights = x[f"{name}_head_weights"]
        groups = [sum(weights[h] * x[name][:, h] for h in range(3 * g, 3 * g + 3)) / 3 for g in range(2)]
        pooled[name] = torch.stack(groups, dim=1)  # [B, G, N, D]
    gqa = cases.make_trial("gqa", n_heads=6, n_kv_heads=2, seq_len=7)
    assert_close(cases.run(trial, x), cases.run(gqa, {"q": x["q"], **pooled}), rel_tol=1e-12)


def test_one_head_per_group_is_mha():
    trial = cases.make_trial("wgqa", n_kv_heads=4)
    x = cases.make_inputs(trial)
    x["k_head_weights"], x["v_head_weights"] = torch.ones(4), torch.ones(4)
    mha = cases.make_trial("mha")
    assert_close(
        cases.run(trial, x), cases.run(mha, {name: x[name] for name in ("q", "k", "v")}), rel_tol=1e-6
    )


def test_weights_fold_into_the_projections():
    """Inference form: a GQA layer with W_K,g = Σ_{h in g} w_k[h] W_K,h / r gives the same output."""
    shape = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 8}
    wgqa, gqa = build_layer("wgqa", **shape), build_layer("gqa", **shape)
    torch.manual_seed(0)
    with torch.no_grad():
        for name in ("k", "v"):
            weights = wgqa.weights[f"{name}_head_weights"]
            weights.add_(0.3 * torch.randn_like(weights))
            per_head = wgqa.projections[name].weight.view(2, 2, 8, 32)  # [G, r, D, d_model]
            folded = torch.einsum("grdm,gr->gdm", per_head, weights.view(2, 2) / 2)
            gqa.projections[name].weight.copy_(folded.reshape(16, 32))
        gqa.projections["q"].weight.copy_(wgqa.projections["q"].weight)
        gqa.out_proj.weight.copy_(wgqa.out_proj.weight)
        x = torch.randn(2, 9, 32)
        assert_close(wgqa(x), gqa(x), rel_tol=1e-5)


def test_decode_reads_a_gqa_cache():
    x = cases.make_inputs(cases.make_trial("wgqa", phase="decode", n_heads=4, n_kv_heads=2, seq_len=5))
    assert set(x) == {"q", "k_cache", "v_cache", "cache_seqlens"}  # the weights are folded
    assert x["k_cache"].shape == (2, 2, 5, 16)


def test_layer_trains_and_counts_its_parameters():
    layer = cases.assert_layer_trains("wgqa", n_heads=4, n_kv_heads=2, head_dim=8)
    assert torch.equal(layer.weights["k_head_weights"].data, torch.ones(4))  # starts as mean pooling


def test_invalid_points_and_params():
    cases.assert_invalid_point("wgqa", "n_kv_heads", n_heads=4, n_kv_heads=8)
    with pytest.raises(ValueError, match="init: unknown parameter of wgqa"):
        get_variant("wgqa").check_params({"init": "ones"})


def test_cost_model():
    b, h, g, n, d = 2, 8, 2, 100, 64
    point = {"batch": b, "n_heads": h, "n_kv_heads": g, "seq_len": n, "head_dim": d, "dtype": "bfloat16"}
    variant = get_variant("wgqa")
    cost = variant.cost(cases.make_trial("wgqa", **point))
    assert cost.kv_bytes_per_token == 2 * g * d * 2  # GQA's cache
    assert cost.flops == pytest.approx(4 * b * h * n * (n + 1) / 2 * d + 4 * b * h * n * d)  # + pooling
    assert cost.bytes_moved == 2 * (2 * b * h * n * d + 2 * b * h * n * d + 2 * h)  # q, o; k, v per head
    decode = variant.cost(cases.make_trial("wgqa", phase="decode", **point))
    gqa_decode = get_variant("gqa").cost(cases.make_trial("gqa", phase="decode", **point))
    assert (decode.flops, decode.bytes_moved) == (gqa_decode.flops, gqa_decode.bytes_moved)
    assert cost.n_params == decode.n_params == 4 * (h * d) ** 2 + 2 * h  # the trainable layer's
