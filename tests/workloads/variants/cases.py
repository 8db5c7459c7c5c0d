"""Shared builders for variant tests: a resolved trial, its inputs, and the comparison with the reference."""

import pytest
import torch

from tests.helpers import assert_close
from workloads.trial import Trial, canonical_json
from workloads.variants import VARIANTS, InvalidPoint, get_variant
from workloads.variants.layer import build_layer

# The variants of the package; plugins the test session loads (tests/fault_variant.py) are named test-*.
SHIPPED = sorted(name for name in VARIANTS if not name.startswith("test-"))

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


def smoke_trial(variant: str, **point) -> Trial:
    """`make_trial` at the variant's smoke parameters (Variant.smoke_params, the variants_smoke sweep's):
    tests and sweep agree."""
    return make_trial(variant, dict(get_variant(variant).smoke_params), **point)


def make_inputs(trial: Trial, seed: int = 0) -> dict[str, torch.Tensor]:
    return get_variant(trial.variant).make_inputs(
        trial, torch.device("cpu"), torch.Generator().manual_seed(seed)
    )


def as_float64(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().double() if v.is_floating_point() else v for k, v in inputs.items()}


def run(trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return get_variant(trial.variant).run(trial, inputs)


def assert_invalid_point(
    variant: str, axis: str, params: dict | None = None, match: str | None = None, **point
) -> None:
    """`variant` cannot describe BASE_POINT with `point` and `params`: InvalidPoint on sweep axis `axis`."""
    with pytest.raises(InvalidPoint, match=match) as info:
        make_trial(variant, params, **point)
    assert info.value.axis == axis


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


def assert_gradients_match_reference(
    trial: Trial, rel_tol: float = 1e-5, seed: int = 0, zero_ok: tuple[str, ...] = ()
) -> dict:
    """Forward + backward of the trial's backend on fp32 inputs against the float64 reference, under one
    random output gradient: every floating input's gradient (activations and weights) is compared by
    name and must be non-zero, i.e. reach the output, except those named in `zero_ok`. Returns the
    gradients by input name."""
    variant = get_variant(trial.variant)
    inputs = make_inputs(trial, seed)
    names = [name for name, t in inputs.items() if t.is_floating_point()]
    ref_inputs = as_float64(inputs)
    for name in names:
        inputs[name].requires_grad_(True)
        ref_inputs[name].requires_grad_(True)
    out = variant.run(trial, inputs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
    grads = torch.autograd.grad(out, [inputs[n] for n in names], grad_out, allow_unused=True)
    ref = variant.reference(trial, ref_inputs)
    ref_grads = torch.autograd.grad(ref, [ref_inputs[n] for n in names], grad_out.double(), allow_unused=True)
    for name, got, want in zip(names, grads, ref_grads, strict=True):
        assert got is not None and want is not None, f"{trial.label}: {name} does not reach the output"
        assert_close(got, want, rel_tol=rel_tol, name=f"{trial.label} d{name}")
        assert name in zero_ok or got.abs().sum() > 0, f"{trial.label}: the gradient of {name} is zero"
    return dict(zip(names, grads, strict=True))


def assert_layer_trains(variant: str, params: dict | None = None, seed: int = 0, **shape):
    """`build_layer(variant, params=params, **shape)`: its parameter count is the variant's `n_params`, and
    one backward gives every parameter (projections, the variant's weights, W_O) a non-zero gradient.
    Returns the layer."""
    layer = build_layer(variant, params=params, **shape)
    assert sum(p.numel() for p in layer.parameters()) == get_variant(variant).n_params(layer.trial)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 7, shape["n_heads"] * shape["head_dim"], generator=generator)  # [B, N, d_model]
    y = layer(x)
    assert y.shape == x.shape
    (y * torch.randn(y.shape, generator=generator)).sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
            f"{variant}: no gradient for {name}"
        )
    return layer


def assert_phase_matches_reference(trial: Trial, rel_tol: float = 1e-5, **train_options) -> None:
    """Prefill or decode: the output against the float64 reference; train: every input's gradient too
    (`assert_gradients_match_reference`, which takes `train_options`)."""
    if trial.phase == "train":
        assert_gradients_match_reference(trial, rel_tol=rel_tol, **train_options)
    else:
        assert_matches_reference(trial, rel_tol=rel_tol)


def offered_cases(variant: str) -> list:
    """pytest params (backend, phase) of every implementation `variant` offers, phase train included
    where it offers a backward, with readable ids. Flex is left out: it compiles per shape (seconds
    each on a CPU), so tests/workloads/variants/test_registry.py checks every variant's flex at one
    shape, and tests/workloads/test_flex.py its masks."""
    implementation = get_variant(variant)
    own = [(b, p) for b, p in implementation.implementations if b != "flex"]
    pairs = [*own, *((b, "train") for b, p in own)]
    return [
        pytest.param(backend, phase, id=f"{backend}-{phase}")
        for backend, phase in dict.fromkeys(pairs)
        if implementation.unsupported(backend, phase) is None
    ]
