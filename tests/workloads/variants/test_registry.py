"""Every registered variant, through the same doors: its backends against its reference, its train
phase through the runner (every gradient checked), unsupported combinations as reasons, its trainable
layer, its KV-cache arithmetic; its smoke parameters, at which the variants_smoke sweep plans every
registered variant; and its row in README's Variants table."""

from pathlib import Path

import pytest
import torch

from orchestrator.cli import render
from orchestrator.config import load_config
from orchestrator.planning import plan_trials
from tests.workloads.variants.cases import (
    SHIPPED,
    assert_matches_reference,
    make_trial,
    smoke_trial,
)
from workloads.backends import BACKENDS, IMPLEMENTED_BACKENDS, PINNED_SDPA
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
from workloads.trial import PHASES, canonical_json
from workloads.variants import ALL_VARIANTS, VARIANTS, Variant, get_variant, register, variant_names
from workloads.variants.layer import build_layer

README = Path(__file__).parents[3] / "README.md"
FAST = MeasureSettings(min_run_time_s=0.01)


def offered(backends=BACKENDS, phases=("prefill", "decode")):
    return [
        pytest.param(name, backend, phase, id=f"{name}-{backend}-{phase}")
        for name in SHIPPED
        for backend in backends
        for phase in phases
        if get_variant(name).unsupported(backend, phase) is None
    ]


def test_every_variant_of_the_design_is_registered():
    expected = {"mha", "gqa", "mqa", "mla", "moh", "moa", "switchhead", "dcmha", "kha", "mta"}
    expected |= {"streaming", "moba", "cog", "rela", "pruned"}
    assert expected <= set(SHIPPED)
    with pytest.raises(KeyError, match="unknown variant 'nope' \\(known: .*gqa.*mha.*mqa"):
        get_variant("nope")


def test_all_names_every_registered_variant_once():
    assert variant_names(["mqa"]) == ["mqa"]
    others = [name for name in VARIANTS if name != "gqa"]
    assert variant_names(["gqa", ALL_VARIANTS, "mha"]) == ["gqa", *others]


def test_no_variant_may_be_named_all():
    class All(Variant):
        name = ALL_VARIANTS

    with pytest.raises(ValueError, match="cannot be named 'all'"):
        register(All())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_smoke_params_are_parameters_of_the_variant(name):
    try:
        get_variant(name).check_params(get_variant(name).smoke_params)
    except ValueError as exc:
        pytest.fail(f"{name}: smoke_params {get_variant(name).smoke_params} are not valid parameters: {exc}")


def test_variants_smoke_plans_every_registered_variant_at_its_smoke_params():
    """variants_smoke names `all`: a new variant (plugins too) is planned there without an edit of the
    sweep, at the parameters its own file declares small (`smoke_params`)."""
    plan = plan_trials(load_config(["sweep=variants_smoke"]).sweep)
    params_planned: dict[str, set[str]] = {}
    for trial in plan.trials:
        params_planned.setdefault(trial.variant, set()).add(trial.params)
    for name, variant in VARIANTS.items():
        assert name in params_planned, f"variants_smoke plans no trial of {name} ({plan.describe()})"
        smoke = canonical_json(variant.check_params(variant.smoke_params))
        assert params_planned[name] == {smoke}, f"{name}: planned at {params_planned[name]}, not {smoke}"


def readme_variant_rows() -> tuple[list[str], dict[str, str]]:
    """The header cells and {variant: row} of README's Variants table."""
    text = README.read_text()
    start = text.index("\n| variant | what it is |") + 1
    lines = text[start:].split("\n\n", 1)[0].splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return header, {line.split("|")[1].strip().strip("`"): line for line in lines[2:]}


def expected_readme_row(name: str, backends: list[str]) -> str:
    """The row README's Variants table must have for `name`: what the code says."""
    variant = get_variant(name)
    params = ", ".join(f"`{key}={render(value)}`" for key, value in variant.param_defaults.items()) or "—"
    phases = [
        ", ".join(p for p in ("prefill", "decode", "train") if variant.unsupported(backend, p) is None) or "—"
        for backend in backends
    ]
    cells = [f"`{name}`", variant.summary.replace("|", "\\|"), params, *phases]
    return "| " + " | ".join(cells) + " |"


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_has_the_variants_row(name):
    header, rows = readme_variant_rows()
    assert header[3:] == list(IMPLEMENTED_BACKENDS), (
        f"README's Variants table needs one column per implementation ({IMPLEMENTED_BACKENDS}): {header}"
    )
    expected = expected_readme_row(name, header[3:])
    assert rows.get(name) == expected, (
        f"README.md, table under '### Variants': the row of {name} is\n{expected}"
    )


def test_readme_lists_only_registered_variants():
    _, rows = readme_variant_rows()
    assert set(rows) <= set(SHIPPED), f"README's Variants table lists unregistered {set(rows) - set(SHIPPED)}"


# Every PyTorch backend at one shape: flex compiles once per variant here; of the pinned SDPA kernels,
# the two a CPU has (efficient and cuDNN refuse it: tests/workloads/test_backends.py).
TORCH_BACKENDS = ("torch-ref", "torch-sdpa", "sdpa-flash", "sdpa-math", "flex")


@pytest.mark.parametrize("name,backend,phase", offered(backends=TORCH_BACKENDS))
def test_torch_backends_match_the_reference(name, backend, phase):
    trial = smoke_trial(name, backend=backend, phase=phase, seq_len=23)
    if backend in PINNED_SDPA.values():  # a pinned kernel may refuse the point, saying why
        result = run_trial(trial, FAST)
        assert result.status == "ok" or (
            result.status == "unsupported" and result.error.startswith(f"{backend}: ")
        ), result.error
        if result.status == "ok":
            assert result.rel_err < 1e-5
        return
    assert_matches_reference(trial)


@pytest.mark.parametrize("name,backend,phase", offered(backends=("triton",)))
def test_triton_backend_matches_the_reference(name, backend, phase):
    assert_matches_reference(smoke_trial(name, backend=backend, phase=phase, seq_len=23))


@pytest.mark.parametrize(
    "name,backend,phase", offered(backends=("torch-ref", "torch-sdpa"), phases=("train",))
)
def test_train_phase_checks_every_gradient(name, backend, phase):
    result = run_trial(smoke_trial(name, backend=backend, phase=phase), FAST)
    assert result.status == "ok", result.error
    assert result.rel_err < 1e-5 and result.latency_ms > 0


def test_train_phase_catches_a_wrong_gradient(monkeypatch):
    """A backend whose backward is off (here: the gradient of k is dropped) fails its accuracy check."""
    variant = get_variant("kha")
    forward = variant.implementations[("torch-ref", "prefill")]

    def detached_k(trial, inputs):
        return forward(trial, {**inputs, "k": inputs["k"].detach()})

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "prefill"), detached_k)
    result = run_trial(smoke_trial("kha", backend="torch-sdpa", phase="train"), FAST)
    assert result.status == "error" and "of dk" in result.error


@pytest.mark.parametrize("name", SHIPPED)
def test_combinations_not_offered_are_unsupported_rows(name):
    variant = get_variant(name)
    missing = [(b, p) for b in BACKENDS for p in PHASES if variant.unsupported(b, p) is not None]
    for backend, phase in missing:
        result = run_trial(smoke_trial(name, backend=backend, phase=phase), FAST)
        assert result.status == "unsupported" and name in result.error, (backend, phase, result.error)


@pytest.mark.parametrize("name", SHIPPED)
def test_layer_trains_every_parameter(name):
    """The variant as a layer: x [B, N, d_model] -> same shape; every parameter gets a gradient and the
    parameter count is the cost model's."""
    layer = build_layer(
        name, n_heads=4, n_kv_heads=2, head_dim=16, params=dict(get_variant(name).smoke_params)
    )
    x = torch.randn(2, 13, 64, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
            f"{name}: {parameter_name} not trained"
        )
    assert sum(p.numel() for p in layer.parameters()) == get_variant(name).n_params(layer.trial)


@pytest.mark.parametrize("dtype,size", [("bfloat16", 2), ("float32", 4)])
def test_kv_bytes_per_token_reproduce_deepseek_v2(dtype, size):
    """Elements cached per token and layer: MHA 2·H·d_h, GQA 2·G·d_h, MQA 2·d_h, MLA d_c + d_R; with
    d_c = 4·d_h and d_R = d_h / 2, MLA equals GQA with 2.25 groups (DeepSeek-V2, Table 1)."""
    h, g, d_h = 32, 8, 128
    point = {"n_heads": h, "n_kv_heads": g, "head_dim": d_h, "dtype": dtype, "phase": "decode"}
    per_token = {
        name: get_variant(name).cost(make_trial(name, params, **point)).kv_bytes_per_token
        for name, params in [
            ("mha", {}),
            ("gqa", {}),
            ("mqa", {}),
            ("mla", {"latent_dim": 512, "rope_dim": 64}),
        ]
    }
    assert per_token == {
        "mha": 2 * h * d_h * size,
        "gqa": 2 * g * d_h * size,
        "mqa": 2 * d_h * size,
        "mla": (512 + 64) * size,
    }
    assert per_token["mla"] == 2 * 2.25 * d_h * size


def test_kv_cache_of_the_variants_that_cache_less():
    """MoA caches one K/V head, MoH every head, pruned heads nothing, streaming heads sink + window."""
    point = {"n_heads": 8, "n_kv_heads": 4, "head_dim": 16, "dtype": "float32", "seq_len": 1000, "batch": 3}

    def cost(name, params=None):
        return get_variant(name).cost(make_trial(name, params, phase="decode", **point))

    assert cost("moa").kv_bytes_per_token == 2 * 16 * 4
    assert cost("moh", {"shared_heads": 2, "top_k": 2}).kv_bytes_per_token == 2 * 8 * 16 * 4
    assert cost("pruned", {"keep_heads": 0.25}).kv_bytes_per_token == 2 * 2 * 16 * 4
    streaming = cost("streaming", {"sink": 10, "window": 90, "retrieval_heads": 0.25})
    # One retrieval KV head keeps 1000 tokens, three streaming heads keep 100 each.
    assert streaming.kv_cache_bytes == 3 * 2 * 16 * 4 * (1000 + 3 * 100)
    assert streaming.kv_bytes_per_token == round(streaming.kv_cache_bytes / 3000)


def test_train_phase_fails_on_a_nan_gradient_next_to_finite_ones(monkeypatch):
    """One NaN among finite gradient errors must still fail the check (NaN is the worst error)."""
    variant = get_variant("kha")
    forward = variant.implementations[("torch-ref", "prefill")]

    def nan_grad_of_q(trial, inputs):
        q = inputs["q"].clone()
        q.register_hook(lambda grad: grad * float("nan"))  # the output stays right, dq turns NaN
        return forward(trial, {**inputs, "q": q})

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "prefill"), nan_grad_of_q)
    result = run_trial(smoke_trial("kha", backend="torch-sdpa", phase="train"), FAST)
    assert result.status == "error" and "rel_err=nan of dq" in result.error


@pytest.mark.parametrize(
    "name,params,point",
    [
        pytest.param("gqa", {}, {"head_dim": 8, "phase": "prefill"}, id="head-dim-below-16"),
        pytest.param(
            "mla", {"latent_dim": 32, "rope_dim": 250}, {"phase": "prefill"}, id="mla-prefill-d_qk-266"
        ),
        pytest.param(
            "mla", {"latent_dim": 520, "rope_dim": 16}, {"phase": "decode"}, id="mla-decode-latent-520"
        ),
    ],
)
def test_shapes_the_triton_kernels_do_not_take_are_unsupported(name, params, point):
    result = run_trial(make_trial(name, params, backend="triton", **point), FAST)
    assert result.status == "unsupported" and "the triton" in result.error and "head dims" in result.error


def test_triton_head_dim_limits_are_the_kernels():
    from kernels import _common
    from kernels.decode_attention import kernel as decode
    from workloads.backends import TRITON_HEAD_DIMS

    assert TRITON_HEAD_DIMS["prefill"] == TRITON_HEAD_DIMS["train"]
    assert TRITON_HEAD_DIMS["prefill"] == (_common.MIN_HEAD_DIM, _common.MAX_HEAD_DIM, _common.MAX_HEAD_DIM)
    assert TRITON_HEAD_DIMS["decode"] == (_common.MIN_HEAD_DIM, decode.MAX_HEAD_DIM_K, decode.MAX_HEAD_DIM_V)


@pytest.mark.parametrize("name", SHIPPED)
def test_pinned_sdpa_backends_offer_what_torch_sdpa_offers(name):
    """README's torch-sdpa column stands for the sdpa-* backends too: they pin its call to one kernel."""
    variant = get_variant(name)
    for pinned in PINNED_SDPA.values():
        for phase in PHASES:
            assert (variant.unsupported(pinned, phase) is None) == (
                variant.unsupported("torch-sdpa", phase) is None
            )
