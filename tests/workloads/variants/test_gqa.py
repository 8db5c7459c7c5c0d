"""The MHA/GQA/MQA family (gqa.py, mha.py, mqa.py): the KV-head axis each sets, the groups GQA
refuses, its torch backends against the reference, and its cost model."""

import dataclasses

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant


@pytest.mark.parametrize(
    "name,n_kv_heads,expected",
    [
        pytest.param("mha", 2, 6, id="mha-ignores-axis"),
        pytest.param("mqa", 3, 1, id="mqa-one-head"),
        pytest.param("gqa", 2, 2, id="gqa-keeps-axis"),
        pytest.param("gqa", 6, 6, id="gqa-ratio-1"),
    ],
)
def test_resolve_sets_kv_heads(name, n_kv_heads, expected):
    assert cases.make_trial(name, n_heads=6, n_kv_heads=n_kv_heads).n_kv_heads == expected


@pytest.mark.parametrize("n_heads,n_kv_heads", [(6, 4), (3, 6)], ids=["indivisible", "more-kv-than-q"])
def test_gqa_rejects_invalid_groups(n_heads, n_kv_heads):
    shape = {"n_heads": n_heads, "n_kv_heads": n_kv_heads}
    cases.assert_invalid_point("gqa", "n_kv_heads", match="not divisible", **shape)


def test_decode_is_causal_by_construction():
    assert cases.make_trial("gqa", phase="decode", causal=False).causal is True


def test_params_are_checked():
    with pytest.raises(ValueError, match="window: unknown parameter of gqa"):
        get_variant("gqa").check_params({"window": 4})
    assert get_variant("gqa").check_params({}) == {}


TORCH_CASES = [
    pytest.param(name, backend, phase, seq_len, id=f"{name}-{backend}-{phase}-n{seq_len}")
    for name in ("mha", "gqa", "mqa")
    for backend in ("torch-ref", "torch-sdpa")
    for phase, seq_len in (("prefill", 37), ("decode", 50))
]


@pytest.mark.parametrize("name,backend,phase,seq_len", TORCH_CASES)
def test_torch_backends_match_reference(name, backend, phase, seq_len):
    trial = cases.make_trial(
        name, backend=backend, phase=phase, seq_len=seq_len, n_heads=6, n_kv_heads=2, head_dim=24
    )
    cases.assert_matches_reference(trial)


def test_sdpa_decode_honours_a_ragged_cache_mask():
    trial = cases.make_trial("gqa", backend="torch-sdpa", phase="decode", batch=3, seq_len=20, n_heads=6)
    inputs = cases.make_inputs(trial)
    inputs["cache_seqlens"] = torch.tensor([1, 20, 7], dtype=torch.int32)
    inputs["filled_mask"] = (torch.arange(20) < inputs["cache_seqlens"][:, None])[:, None, None, :]
    variant = get_variant("gqa")
    assert_close(variant.run(trial, inputs), variant.reference(trial, cases.as_float64(inputs)), rel_tol=1e-5)


@pytest.mark.parametrize("name,kv_heads", [("mha", 6), ("gqa", 2), ("mqa", 1)])
def test_cost_model(name, kv_heads):
    b, h, n, d = 2, 6, 100, 48
    trial = cases.make_trial(name, batch=b, seq_len=n, n_heads=h, n_kv_heads=2, head_dim=d, dtype="bfloat16")
    cost = get_variant(name).cost(trial)
    assert cost.kv_bytes_per_token == 2 * kv_heads * d * 2  # K and V, bf16
    assert cost.flops == pytest.approx(4 * b * h * n * (n + 1) / 2 * d)
    assert cost.bytes_moved == 2 * (2 * b * h * n * d + 2 * b * kv_heads * n * d)
    assert cost.n_params == 2 * (h * d) ** 2 + 2 * (h * d) * kv_heads * d
    decode = get_variant(name).cost(dataclasses.replace(trial, phase="decode"))
    assert decode.flops == pytest.approx(4 * b * h * n * d)
    assert decode.bytes_moved == 2 * (2 * b * h * d + 2 * b * kv_heads * n * d)
