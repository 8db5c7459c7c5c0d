"""Multi-token attention: a per-head convolution of the scores over (query, key), then head mixing."""

import math

import pytest
import torch

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads.variants import get_variant
from workloads.variants.mta import convolved_scores

KERNEL_CASES = [
    pytest.param({}, id="defaults-6x11-g2"),
    pytest.param({"query_kernel": 2, "key_kernel": 3, "head_group": 1}, id="2x3-g1"),
    pytest.param({"query_kernel": 3, "key_kernel": 5, "head_group": 4}, id="3x5-g4"),
]


@pytest.mark.parametrize("backend,phase", cases.offered_cases("mta"))
@pytest.mark.parametrize("params", KERNEL_CASES)
def test_matches_reference(backend, phase, params):
    trial = cases.make_trial("mta", params, backend=backend, phase=phase, head_dim=12)
    cases.assert_phase_matches_reference(trial)


def test_convolution_by_loops():
    """Ŝ[h, i, j] = Σ_a Σ_b θ[h, a, c_k//2 + b] S[h, i - a, j + b], zero outside the matrix."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 7, 7, generator=generator, dtype=torch.float64)
    kernel = torch.randn(3, 3, 5, generator=generator, dtype=torch.float64)
    expected = torch.zeros_like(scores)
    for i in range(7):
        for j in range(7):
            for a in range(3):
                for b in range(-2, 3):
                    if 0 <= i - a and 0 <= j + b < 7:
                        expected[:, :, i, j] += kernel[:, a, 2 + b] * scores[:, :, i - a, j + b]
    assert_close(convolved_scores(scores, kernel), expected, rel_tol=1e-12)


def test_whole_op_by_hand():
    """Mask to 0, convolve, mask to -inf, softmax, mix heads within groups of two, P·v."""
    trial = cases.make_trial("mta", {"query_kernel": 2, "key_kernel": 3, "head_group": 2}, seq_len=6)
    x = cases.as_float64(cases.make_inputs(trial))
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    scores = (x["q"] @ x["k"].transpose(-1, -2) / math.sqrt(16)).masked_fill(future, 0.0)
    kernel = x["score_kernel"].clone()
    kernel[:, 0, 1] += 1.0  # stored as the difference from the identity kernel
    probs = torch.softmax(convolved_scores(scores, kernel).masked_fill(future, -math.inf), dim=-1)
    mixed = torch.stack(
        [
            sum(x["head_mix"][h // 2, h % 2, s] * probs[:, (h // 2) * 2 + s] for s in range(2))
            for h in range(4)
        ],
        dim=1,
    )
    assert_close(cases.run(trial, x), mixed @ x["v"], rel_tol=1e-12)


def test_identity_init_is_mha():
    trial = cases.make_trial("mta")
    x = cases.make_inputs(trial)
    x["score_kernel"] = torch.zeros_like(x["score_kernel"])
    x["head_mix"] = torch.eye(2).expand(2, 2, 2)
    assert_close(
        cases.run(trial, x),
        cases.run(cases.make_trial("mha"), {n: x[n] for n in ("q", "k", "v")}),
        rel_tol=1e-6,
    )


def test_no_information_from_future_tokens():
    """The convolution reads keys to the right of j, but only at or before the query's own position."""
    trial = cases.make_trial("mta", {"query_kernel": 3, "key_kernel": 5, "head_group": 2})
    x = cases.make_inputs(trial)
    changed = dict(x)
    for name in ("q", "k", "v"):
        changed[name] = torch.cat([x[name][:, :, :10], torch.randn_like(x[name][:, :, 10:])], dim=2)
    assert_close(cases.run(trial, changed)[:, :, :10], cases.run(trial, x)[:, :, :10], rel_tol=1e-6)


def test_layer_trains_and_counts_its_parameters():
    cases.assert_layer_trains(
        "mta", {"query_kernel": 3, "key_kernel": 5}, n_heads=4, n_kv_heads=4, head_dim=8
    )


def test_invalid_points():
    cases.assert_invalid_point("mta", "causal", causal=False)
    cases.assert_invalid_point("mta", "n_heads", {"head_group": 3}, match="head_group=3", n_heads=4)
    assert cases.make_trial("mta", phase="decode", causal=False).causal  # decode is causal by construction


@pytest.mark.parametrize(
    "params,message",
    [
        ({"key_kernel": 4}, "key_kernel: 4 must be odd"),
        ({"query_kernel": 0}, "query_kernel: 0 must be at least 1"),
        ({"head_group": 0}, "head_group: 0 must be at least 1"),
    ],
    ids=["even-key-kernel", "no-query-kernel", "no-head-group"],
)
def test_params_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        get_variant("mta").check_params(params)


def test_cost_model():
    b, h, n, d = 2, 8, 100, 64
    point = {"batch": b, "n_heads": h, "seq_len": n, "head_dim": d, "dtype": "bfloat16"}
    cost = get_variant("mta").cost(cases.make_trial("mta", **point))
    assert cost.kv_bytes_per_token == 2 * h * d * 2
    pairs = b * h * n * (n + 1) / 2
    assert cost.flops == pytest.approx(4 * pairs * d + pairs * 2 * (6 * 11 + 2))  # + kernel taps, mixing
    assert cost.bytes_moved == 2 * (4 * b * h * n * d + h * 6 * 11 + h * 2)
    assert cost.n_params == 4 * (h * d) ** 2 + h * 6 * 11 + (h // 2) * 2 * 2
