"""Knocking-heads attention: shared D×D transforms of every head's q, k, v before GQA."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant
from workloads.variants.layer import build_layer


@pytest.mark.parametrize("backend,phase", cases.offered_cases("kha"))
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4], ids=["mqa", "gqa2", "mha"])
def test_matches_reference(backend, phase, n_kv_heads):
    trial = cases.make_trial("kha", backend=backend, phase=phase, n_kv_heads=n_kv_heads, head_dim=20)
    cases.assert_phase_matches_reference(trial)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_identity_transforms_give_gqa(phase):
    trial = cases.make_trial("kha", phase=phase)
    x = cases.make_inputs(trial)
    for name in ("t_q", "t_k", "t_v"):
        x[name] = torch.eye(trial.head_dim)
    gqa_inputs = {name: value for name, value in x.items() if not name.startswith("t_")}
    assert_close(
        cases.run(trial, x), cases.run(cases.make_trial("gqa", phase=phase), gqa_inputs), rel_tol=1e-6
    )


def test_transforms_fold_into_the_projections():
    """A KHA layer equals a GQA layer whose W_Q, W_K, W_V have T folded in: q_h T = x (T_qᵀ W_Q,h)ᵀ."""
    shape = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 8}
    kha, gqa = build_layer("kha", **shape), build_layer("gqa", **shape)
    torch.manual_seed(0)
    with torch.no_grad():
        for name in ("q", "k", "v"):
            transform = kha.weights[f"t_{name}"]
            transform.add_(0.3 * torch.randn_like(transform))
            weight = kha.projections[name].weight  # [heads·D, d_model]
            per_head = weight.view(-1, 8, weight.shape[1])  # [heads, D, d_model]
            folded = torch.einsum("ed,hem->hdm", transform, per_head).reshape(weight.shape)
            gqa.projections[name].weight.copy_(folded)
        gqa.out_proj.weight.copy_(kha.out_proj.weight)
        x = torch.randn(2, 9, 32)
        assert_close(kha(x), gqa(x), rel_tol=1e-5)


def test_layer_trains_and_counts_its_parameters():
    cases.assert_layer_trains("kha", n_heads=4, n_kv_heads=2, head_dim=8)


def test_invalid_points_and_params():
    cases.assert_invalid_point("kha", "n_kv_heads", n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="rank: unknown parameter of kha"):
        get_variant("kha").check_params({"rank": 2})


def test_cost_model():
    b, h, g, n, d = 2, 8, 2, 100, 64
    variant = get_variant("kha")
    trial = cases.make_trial("kha", batch=b, n_heads=h, n_kv_heads=g, seq_len=n, head_dim=d, dtype="bfloat16")
    cost = variant.cost(trial)
    assert cost.kv_bytes_per_token == 2 * g * d * 2  # the caches hold transformed k, v: GQA's size
    attention = 4 * b * h * n * (n + 1) / 2 * d
    assert cost.flops == pytest.approx(attention + 2 * b * n * (h + 2 * g) * d * d)  # D² per head-token
    assert cost.bytes_moved == 2 * (2 * b * h * n * d + 2 * b * g * n * d + 3 * d * d)
    decode = variant.cost(
        cases.make_trial("kha", phase="decode", batch=b, n_heads=h, n_kv_heads=g, seq_len=n, head_dim=d)
    )
    assert decode.flops == pytest.approx(4 * b * h * n * d + 2 * b * h * d * d)  # only q is transformed
    assert decode.bytes_moved == 4 * (2 * b * h * d + 2 * b * g * n * d + d * d)
    assert cost.n_params == 2 * (h * d) ** 2 + 2 * h * d * g * d + 3 * d * d
