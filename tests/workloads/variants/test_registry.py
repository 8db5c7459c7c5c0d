"""Every registered variant, through the same doors: its backends against its reference, its train
phase through the runner (every gradient checked), unsupported combinations as reasons, its trainable
layer, and its KV-cache arithmetic."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.workloads.variants.cases import assert_matches_reference, make_trial
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
from workloads.trial import BACKENDS, PHASES
from workloads.variants import VARIANTS, get_variant
from workloads.variants.layer import build_layer

SMOKE = Path(__file__).parents[3] / "orchestrator" / "conf" / "sweep" / "variants_smoke.yaml"
# The small parameters the CPU smoke sweep uses (e.g. an MLA latent of 32), so tests and sweep agree.
SMOKE_PARAMS = OmegaConf.to_container(OmegaConf.load(SMOKE).params)
FAST = MeasureSettings(min_run_time_s=0.01)
SHIPPED = sorted(name for name in VARIANTS if not name.startswith("test-"))


def smoke_trial(name, **point):
    return make_trial(name, SMOKE_PARAMS.get(name, {}), **point)


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
    assert set(SMOKE_PARAMS) <= set(SHIPPED)


@pytest.mark.parametrize("name,backend,phase", offered(backends=("torch-ref", "torch-sdpa")))
def test_torch_backends_match_the_reference(name, backend, phase):
    assert_matches_reference(smoke_trial(name, backend=backend, phase=phase, seq_len=23))


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
    layer = build_layer(name, n_heads=4, n_kv_heads=2, head_dim=16, params=SMOKE_PARAMS.get(name, {}))
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


@pytest.mark.parametrize("n,expected", [(1100, 76 + 512), (1600, 64 + 512), (512, 512), (40, 40)])
def test_moba_decode_reads_its_own_partial_block_and_top_k_minus_one_full_ones(n, expected):
    point = {"phase": "decode", "seq_len": n, "batch": 1, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}
    moba = get_variant("moba").cost(make_trial("moba", {"block_size": 512, "top_k": 2}, **point))
    full = get_variant("gqa").cost(make_trial("gqa", **point))
    pooling = 2 * 16 * n * 4  # mean pooling reads every key once
    cache_per_token = 2 * 2 * 16 * 4  # K and V of 2 KV heads, float32
    assert moba.bytes_moved - pooling == full.bytes_moved - cache_per_token * (n - expected)


def test_moh_decode_reads_only_the_active_heads_caches():
    point = {"phase": "decode", "seq_len": 100, "batch": 1, "n_heads": 8, "head_dim": 16}
    moh = get_variant("moh").cost(make_trial("moh", {"shared_heads": 2, "top_k": 2}, **point))
    mha = get_variant("mha").cost(make_trial("mha", **point))
    assert moh.bytes_moved == pytest.approx(mha.bytes_moved / 2)  # 4 of 8 heads: half of q, o and cache
    assert moh.kv_bytes_per_token == mha.kv_bytes_per_token  # but every head is cached
