"""The MHA/GQA/MQA family: constraints, backends against the reference, cost model."""

import pytest
import torch

from tests.helpers import assert_close
from workloads.trial import Trial
from workloads.variants import VARIANTS, InvalidPoint, get_variant
from workloads.variants.base import dtype_size, mean_keys_per_query

POINT = {
    "variant": "x",
    "backend": "torch-ref",
    "phase": "prefill",
    "batch": 1,
    "seq_len": 8,
    "n_heads": 8,
    "n_kv_heads": 2,
    "head_dim": 16,
    "dtype": "float32",
    "causal": False,
}


def test_registry_holds_the_family():
    assert {"mha", "gqa", "mqa"} <= set(VARIANTS)
    with pytest.raises(KeyError, match="unknown variant 'nope'"):
        get_variant("nope")


@pytest.mark.parametrize(
    "name,n_kv_heads,expected",
    [
        pytest.param("mha", 2, 8, id="mha-ignores-axis"),
        pytest.param("mqa", 4, 1, id="mqa-one-head"),
        pytest.param("gqa", 2, 2, id="gqa-keeps-axis"),
        pytest.param("gqa", 8, 8, id="gqa-ratio-1"),
    ],
)
def test_resolve_sets_kv_heads(name, n_kv_heads, expected):
    assert get_variant(name).resolve({**POINT, "n_kv_heads": n_kv_heads})["n_kv_heads"] == expected


@pytest.mark.parametrize("n_heads,n_kv_heads", [(6, 4), (4, 8)], ids=["indivisible", "more-kv-than-q"])
def test_gqa_rejects_invalid_groups(n_heads, n_kv_heads):
    with pytest.raises(InvalidPoint, match="not divisible") as info:
        get_variant("gqa").resolve({**POINT, "n_heads": n_heads, "n_kv_heads": n_kv_heads})
    assert info.value.axis == "n_kv_heads"


def test_decode_is_causal_by_construction():
    assert get_variant("gqa").resolve({**POINT, "phase": "decode", "causal": False})["causal"] is True


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
    variant = get_variant(name)
    trial = Trial(
        **variant.resolve(
            {
                **POINT,
                "variant": name,
                "backend": backend,
                "phase": phase,
                "batch": 2,
                "seq_len": seq_len,
                "head_dim": 24,
                "causal": True,
            }
        )
    )
    inputs = variant.make_inputs(trial, torch.device("cpu"), torch.Generator().manual_seed(0))
    ref_inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    assert_close(variant.run(trial, inputs), variant.reference(trial, ref_inputs), rel_tol=1e-5)


def test_sdpa_decode_honours_a_ragged_cache_mask():
    variant = get_variant("gqa")
    trial = Trial(
        **variant.resolve(
            {**POINT, "variant": "gqa", "backend": "torch-sdpa", "phase": "decode", "batch": 3, "seq_len": 20}
        )
    )
    inputs = variant.make_inputs(trial, torch.device("cpu"), torch.Generator().manual_seed(0))
    inputs["cache_seqlens"] = torch.tensor([1, 20, 7], dtype=torch.int32)
    inputs["filled_mask"] = (torch.arange(20) < inputs["cache_seqlens"][:, None])[:, None, None, :]
    ref_inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    assert_close(variant.run(trial, inputs), variant.reference(trial, ref_inputs), rel_tol=1e-5)


@pytest.mark.parametrize(
    "n_q,n_k,causal",
    [(7, 7, True), (3, 10, True), (10, 3, True), (5, 9, False)],
    ids=["square", "nq<nk", "nq>nk", "noncausal"],
)
def test_mean_keys_per_query_counts_the_mask(n_q, n_k, causal):
    seen = [min(n_k, max(0, i + n_k - n_q + 1)) if causal else n_k for i in range(n_q)]
    assert mean_keys_per_query(n_q, n_k, causal) == pytest.approx(sum(seen) / n_q)


@pytest.mark.parametrize("name,kv_heads", [("mha", 8), ("gqa", 2), ("mqa", 1)])
def test_cost_model(name, kv_heads):
    b, h, n, d = 2, 8, 100, 64
    variant = get_variant(name)
    trial = Trial(
        **variant.resolve(
            {
                **POINT,
                "variant": name,
                "batch": b,
                "seq_len": n,
                "head_dim": d,
                "dtype": "bfloat16",
                "causal": True,
            }
        )
    )
    cost = variant.cost(trial)
    assert cost.kv_bytes_per_token == 2 * kv_heads * d * 2  # K and V, bf16
    assert cost.flops == pytest.approx(4 * b * h * n * (n + 1) / 2 * d)
    assert cost.bytes_moved == 2 * (2 * b * h * n * d + 2 * b * kv_heads * n * d)
    assert cost.n_params == 2 * (h * d) ** 2 + 2 * (h * d) * kv_heads * d
    decode = variant.cost(Trial(**{**trial.config(), "phase": "decode"}))
    assert decode.flops == pytest.approx(4 * b * h * n * d)
    assert decode.bytes_moved == 2 * (2 * b * h * d + 2 * b * kv_heads * n * d)
    assert dtype_size("float32") == 4
