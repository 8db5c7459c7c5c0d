"""Shared builders for variant tests: a resolved trial, its inputs, and the comparison with the reference."""

import torch

from tests.helpers import assert_close
from workloads.trial import Trial, canonical_json
from workloads.variants import get_variant

BASE_POINT = {
    "backend": "torch-ref",
    "phase": "prefill",
    "batch": 2,
    "seq_len": 19,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 16,
    "dtype": "float32",
    "causal": True,
}


def make_trial(variant: str, params: dict | None = None, **point) -> Trial:
    """`variant` resolved at BASE_POINT with `point` overrides and `params` (defaults filled in)."""
    implementation = get_variant(variant)
    filled = canonical_json(implementation.check_params(params or {}))
    return Trial(**implementation.resolve({**BASE_POINT, **point, "variant": variant, "params": filled}))


def make_inputs(trial: Trial, seed: int = 0) -> dict[str, torch.Tensor]:
    return get_variant(trial.variant).make_inputs(
        trial, torch.device("cpu"), torch.Generator().manual_seed(seed)
    )


def as_float64(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().double() if v.is_floating_point() else v for k, v in inputs.items()}


def run(trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return get_variant(trial.variant).run(trial, inputs)


def assert_matches_reference(trial: Trial, rel_tol: float = 1e-5, seed: int = 0) -> torch.Tensor:
    """The trial's backend on fp32 inputs against the variant's float64 reference; returns the output."""
    inputs = make_inputs(trial, seed)
    out = run(trial, inputs)
    assert_close(
        out,
        get_variant(trial.variant).reference(trial, as_float64(inputs)),
        rel_tol=rel_tol,
        name=trial.label,
    )
    return out
