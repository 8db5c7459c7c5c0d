"""MoH's gates: shared heads always on, exactly top_k routed heads per token, two-stage weights."""

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants.cases import make_trial
from workloads.variants import InvalidPoint, get_variant
from workloads.variants.layer import build_layer
from workloads.variants.moh import moh_gates


def test_gates_pick_shared_heads_and_top_k_routed_heads():
    generator = torch.Generator().manual_seed(0)
    shared, routed, stage = (torch.randn(2, 9, n, generator=generator) for n in (3, 5, 2))
    gates = moh_gates(shared, routed, stage, top_k=2)  # [B, N, 8]
    alpha = 2 * torch.softmax(stage, dim=-1)
    assert (gates[..., :3] > 0).all(), "shared heads are always on"
    assert ((gates[..., 3:] > 0).sum(-1) == 2).all(), "exactly top_k routed heads per token"
    assert_close(gates[..., :3].sum(-1), alpha[..., 0], rel_tol=1e-6, name="shared gates")
    assert_close(gates[..., 3:].sum(-1), alpha[..., 1], rel_tol=1e-6, name="routed gates")
    best = routed.topk(2, dim=-1).indices
    assert torch.equal(gates[..., 3:].gather(-1, best) > 0, torch.ones_like(best, dtype=torch.bool))


def test_without_shared_heads_the_routed_gates_stand_alone():
    routed = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(1))
    gates = moh_gates(None, routed, None, top_k=3)
    assert_close(gates.sum(-1), torch.ones(1, 4), rel_tol=1e-6)
    layer = build_layer("moh", n_heads=6, n_kv_heads=6, head_dim=16, params={"shared_heads": 0, "top_k": 3})
    assert "stage_logits" not in dict(layer.projections.items())
    layer(torch.randn(2, 5, 96)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_more_active_heads_than_heads_is_an_invalid_point():
    with pytest.raises(InvalidPoint, match="leaves 2 routed heads for top_k=3") as info:
        make_trial("moh", {"shared_heads": 2, "top_k": 3}, n_heads=4)
    assert info.value.axis == "n_heads"


def test_compute_scales_with_the_active_share():
    point = {"seq_len": 64, "n_heads": 8, "head_dim": 16}
    half = get_variant("moh").cost(make_trial("moh", {"shared_heads": 2, "top_k": 2}, **point))
    mha = get_variant("mha").cost(make_trial("mha", **point))
    assert half.flops == pytest.approx(mha.flops / 2)


def test_moh_decode_reads_only_the_active_heads_caches():
    point = {"phase": "decode", "seq_len": 100, "batch": 1, "n_heads": 8, "head_dim": 16}
    moh = get_variant("moh").cost(make_trial("moh", {"shared_heads": 2, "top_k": 2}, **point))
    mha = get_variant("mha").cost(make_trial("mha", **point))
    assert moh.bytes_moved == pytest.approx(mha.bytes_moved / 2)  # 4 of 8 heads: half of q, o and cache
    assert moh.kv_bytes_per_token == mha.kv_bytes_per_token  # but every head is cached
