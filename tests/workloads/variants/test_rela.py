"""ReLA: relu weights over the visible keys, RMS-normalised heads with a learned gain."""

import math

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant


@pytest.mark.parametrize("backend,phase", cases.offered_cases("rela"))
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4], ids=["mqa", "gqa2", "mha"])
def test_matches_reference(backend, phase, n_kv_heads):
    trial = cases.make_trial("rela", backend=backend, phase=phase, n_kv_heads=n_kv_heads, head_dim=12)
    cases.assert_phase_matches_reference(trial)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_per_head_loop(causal):
    """Each head by hand in float64: relu(q·k/√D) over the visible keys, Σ relu·v, RMS norm, gain."""
    trial = cases.make_trial("rela", causal=causal, seq_len=7, n_heads=4, n_kv_heads=2)
    x = cases.as_float64(cases.make_inputs(trial))
    expected = torch.empty_like(x["q"])
    for h in range(4):
        q, k, v = x["q"][:, h], x["k"][:, h // 2], x["v"][:, h // 2]  # [B, N, D]
        weights = torch.relu(q @ k.transpose(-1, -2) / math.sqrt(trial.head_dim))
        if causal:
            weights = weights.tril()
        summed = weights @ v
        rms = torch.sqrt(summed.square().mean(-1, keepdim=True) + 1e-6)
        expected[:, h] = summed / rms * x["norm_gain"][h]
    assert_close(cases.run(trial, x), expected, rel_tol=1e-12)


def test_a_head_can_attend_to_nothing():
    """All scores negative: the output is 0, not NaN (a ReLA head "switches off")."""
    trial = cases.make_trial("rela", phase="decode", seq_len=3)
    x = cases.make_inputs(trial)
    x["q"], x["k_cache"] = -x["q"].abs(), x["k_cache"].abs()  # q·k < 0 for every key
    out = cases.run(trial, x)
    assert torch.equal(out, torch.zeros_like(out))


def test_layer_trains_and_counts_its_parameters():
    layer = cases.assert_layer_trains("rela", n_heads=4, n_kv_heads=2, head_dim=8)
    assert torch.equal(layer.weights["norm_gain"].data, torch.ones(4, 8))  # the gain starts at 1


def test_decode_matches_the_last_prefill_row():
    """Decode over a cache of N tokens gives prefill's last query row (same math, one row)."""
    prefill = cases.make_trial("rela", seq_len=11)
    x = cases.make_inputs(prefill)
    decode = cases.make_trial("rela", phase="decode", seq_len=11)
    cache = {"q": x["q"][:, :, -1], "k_cache": x["k"], "v_cache": x["v"], "norm_gain": x["norm_gain"]}
    cache["cache_seqlens"] = torch.full((2,), 11, dtype=torch.int32)
    assert_close(cases.run(decode, cache), cases.run(prefill, x)[:, :, -1], rel_tol=1e-6)


def test_invalid_points_and_params():
    cases.assert_invalid_point("rela", "n_kv_heads", n_heads=6, n_kv_heads=4)
    with pytest.raises(ValueError, match="top_k: unknown parameter of rela"):
        get_variant("rela").check_params({"top_k": 2})


def test_cost_model():
    b, h, g, n, d = 2, 8, 2, 100, 64
    trial = cases.make_trial(
        "rela", batch=b, n_heads=h, n_kv_heads=g, seq_len=n, head_dim=d, dtype="bfloat16"
    )
    cost = get_variant("rela").cost(trial)
    assert cost.kv_bytes_per_token == 2 * g * d * 2  # K and V of each KV head, bf16
    assert cost.flops == pytest.approx(4 * b * h * n * (n + 1) / 2 * d + 4 * b * h * n * d)  # + the norm
    assert cost.bytes_moved == 2 * (2 * b * h * n * d + 2 * b * g * n * d + h * d)  # q, o, k, v, gain
    decode = get_variant("rela").cost(
        cases.make_trial("rela", phase="decode", n_heads=h, n_kv_heads=g, seq_len=n)
    )
    assert decode.flops == pytest.approx(4 * 2 * h * n * 16 + 4 * 2 * h * 16)
    assert (
        cost.n_params == get_variant("rela").n_params(trial) == 2 * (h * d) ** 2 + 2 * h * d * g * d + h * d
    )
