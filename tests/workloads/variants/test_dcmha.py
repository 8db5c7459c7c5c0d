"""DCMHA: scores and probabilities composed across heads, static and input-dependent low rank."""

import math

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant


@pytest.mark.parametrize("backend,phase", cases.offered_cases("dcmha"))
@pytest.mark.parametrize("rank", [1, 2, 3], ids=["r1", "r2", "r3"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_matches_reference(backend, phase, rank, causal):
    trial = cases.make_trial(
        "dcmha", {"rank": rank}, backend=backend, phase=phase, causal=causal, head_dim=12
    )
    cases.assert_phase_matches_reference(trial)


def _compose_by_loops(a: torch.Tensor, x: dict, stage: str) -> torch.Tensor:
    """a [B, H, N, N]: the composition term by term, one target head and one rank at a time."""
    heads, rank = a.shape[1], x[f"{stage}_q_w1"].shape[-1]
    out = a.clone()
    for target in range(heads):
        for h in range(heads):
            out[:, target] += a[:, h] * x[f"{stage}_static"][h, target]
            for r in range(rank):
                query_weight = x[f"{stage}_q_w1"][:, :, h, r] * x[f"{stage}_q_w2"][:, :, r, target]  # [B, N]
                key_weight = x[f"{stage}_k_w1"][:, :, h, r] * x[f"{stage}_k_w2"][:, :, r, target]
                out[:, target] += a[:, h] * (query_weight[:, :, None] + key_weight[:, None, :])
        out[:, target] += torch.tanh(x[f"{stage}_q_gate"][:, :, target])[:, :, None] * a[:, target]
        out[:, target] += torch.tanh(x[f"{stage}_k_gate"][:, :, target])[:, None, :] * a[:, target]
    return out


def test_composition_by_loops():
    trial = cases.make_trial("dcmha", {"rank": 2}, n_heads=3, seq_len=6, head_dim=4)
    x = cases.as_float64(cases.make_inputs(trial))
    scores = x["q"] @ x["k"].transpose(-1, -2) / math.sqrt(4)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    probs = torch.softmax(_compose_by_loops(scores, x, "pre").masked_fill(future, -math.inf), dim=-1)
    expected = _compose_by_loops(probs, x, "post").masked_fill(future, 0.0) @ x["v"]
    assert_close(cases.run(trial, x), expected, rel_tol=1e-12)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_zero_composition_is_mha(causal):
    trial = cases.make_trial("dcmha", causal=causal)
    x = cases.make_inputs(trial)
    qkv = {name: x[name] for name in ("q", "k", "v")}
    zeroed = {name: torch.zeros_like(value) for name, value in x.items() if name not in qkv}
    assert_close(
        cases.run(trial, {**qkv, **zeroed}),
        cases.run(cases.make_trial("mha", causal=causal), qkv),
        rel_tol=1e-6,
    )


def test_no_information_from_future_tokens():
    """Changing every input at positions >= 10 leaves the outputs of positions < 10 as they were."""
    trial = cases.make_trial("dcmha")
    x = cases.make_inputs(trial)
    changed = cases.make_inputs(trial, seed=1)
    for name, value in x.items():
        if name.endswith("static"):
            changed[name] = value
        elif name in ("q", "k", "v"):  # [B, H, N, D]
            changed[name] = torch.cat([value[:, :, :10], changed[name][:, :, 10:]], dim=2)
        else:  # [B, N, ...]
            changed[name] = torch.cat([value[:, :10], changed[name][:, 10:]], dim=1)
    assert_close(cases.run(trial, changed)[:, :, :10], cases.run(trial, x)[:, :, :10], rel_tol=1e-6)


def test_layer_trains_and_counts_its_parameters():
    layer = cases.assert_layer_trains("dcmha", {"rank": 2}, n_heads=4, n_kv_heads=4, head_dim=8)
    assert not layer.weights["pre_static"].detach().any()  # starts as MHA


def test_prefill_only_and_params_are_checked():
    variant = get_variant("dcmha")
    assert variant.unsupported("torch-ref", "decode") is not None
    assert variant.unsupported("torch-sdpa", "prefill") is not None
    with pytest.raises(ValueError, match="rank: 0 must be at least 1"):
        variant.check_params({"rank": 0})
    assert cases.make_trial("dcmha", n_kv_heads=2).n_kv_heads == 4  # MHA-like: the axis is ignored


def test_cost_model():
    b, h, n, d, r = 2, 8, 100, 64, 2
    point = {"batch": b, "n_heads": h, "seq_len": n, "head_dim": d, "dtype": "bfloat16"}
    cost = get_variant("dcmha").cost(cases.make_trial("dcmha", {"rank": r}, **point))
    assert cost.kv_bytes_per_token == 2 * h * d * 2
    pairs = b * n * (n + 1) / 2
    per_pair = 2 * h * h + 8 * h * r + 7 * h  # static mix, two low-rank round trips, gates, adds
    assert cost.flops == pytest.approx(4 * pairs * h * d + 2 * pairs * per_pair)
    dynamic = 2 * (2 * b * n * (2 * h * r + h) + h * h)  # both stages: query- and key-wise tensors, W
    assert cost.bytes_moved == 2 * (4 * b * h * n * d + dynamic)
    assert cost.n_params == 4 * (h * d) ** 2 + 2 * (h * h + 2 * (h * d) * (2 * h * r + h))
