"""The backend registry: pinned SDPA kernels (a refusal is `unsupported` with PyTorch's reason, any other
failure stays an error) and the `kernels` column naming what ran."""

import pytest
import torch

from tests.workloads.variants.cases import make_trial
from workloads.backends import BACKENDS, Backend, Unsupported, register_backend
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
from workloads.variants import get_variant

FAST = MeasureSettings(min_run_time_s=0.01)
ON_CPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="which SDPA kernels exist depends on the device"
)


@ON_CPU
@pytest.mark.parametrize("backend", ["sdpa-efficient", "sdpa-cudnn"])
@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_a_pinned_kernel_that_refuses_the_inputs_is_unsupported(backend, phase):
    result = run_trial(make_trial("gqa", backend=backend, phase=phase), FAST)
    assert result.status == "unsupported", result.error
    assert result.error.startswith(f"{backend}: No viable backend for scaled_dot_product_attention")
    assert result.latency_ms is None and result.kernels is None


@ON_CPU
@pytest.mark.parametrize(
    "backend,dispatched",
    [
        pytest.param("torch-sdpa", "aten::_scaled_dot_product_flash_attention_for_cpu", id="automatic"),
        pytest.param("sdpa-flash", "aten::_scaled_dot_product_flash_attention_for_cpu", id="flash"),
        pytest.param("sdpa-math", "aten::_scaled_dot_product_attention_math", id="math"),
    ],
)
def test_kernels_name_what_sdpa_dispatched_to(backend, dispatched):
    result = run_trial(make_trial("mha", backend=backend), FAST)
    assert result.status == "ok", result.error
    assert result.kernels == ["aten::scaled_dot_product_attention", dispatched]


@pytest.mark.parametrize("backend", ["torch-ref", "triton"])
def test_every_ok_row_names_what_ran(backend):
    result = run_trial(make_trial("gqa", backend=backend, phase="decode"), FAST)
    assert result.status == "ok", result.error
    assert result.kernels and len(result.kernels) == len(set(result.kernels))


def test_a_pinned_kernel_failing_for_another_reason_is_an_error(monkeypatch):
    """Only SDPA's refusal is `unsupported`: a bug under a pinned kernel must not hide as one."""
    variant = get_variant("mha")

    def broken(trial, inputs):
        raise RuntimeError("shape mismatch in my code")

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "prefill"), broken)
    result = run_trial(make_trial("mha", backend="sdpa-math"), FAST)
    assert result.status == "error" and "shape mismatch in my code" in result.error


def test_unsupported_raised_while_running_is_an_unsupported_row(monkeypatch):
    variant = get_variant("mha")

    def refuses(trial, inputs):
        raise Unsupported("torch-sdpa: refused for a reason of its own")

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "decode"), refuses)
    result = run_trial(make_trial("mha", backend="torch-sdpa", phase="decode"), FAST)
    assert (result.status, result.error) == ("unsupported", "torch-sdpa: refused for a reason of its own")


@pytest.mark.parametrize(
    "backend,message",
    [
        pytest.param(Backend("a/b", "slash"), "must be non-empty, without spaces around or '/'", id="slash"),
        pytest.param(Backend("flex", "again"), "registered twice", id="duplicate"),
        pytest.param(Backend("mine", "x", implementation="nope"), "runs implementation 'nope'", id="runs"),
        pytest.param(
            Backend("mine", "x", implementations={("mha", "train"): None}), "an implementations key", id="key"
        ),
        pytest.param("flex", "must be a workloads.backends.Backend", id="not-a-backend"),
    ],
)
def test_a_malformed_backend_is_refused(backend, message):
    with pytest.raises(ValueError, match=message):
        register_backend(backend)
    assert "mine" not in BACKENDS and "a/b" not in BACKENDS


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "flex"])
@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_on_a_gpu_each_pytorch_kernel_runs_or_says_why_and_names_its_kernels(backend, phase):
    trial = make_trial("gqa", backend=backend, phase=phase, seq_len=257, head_dim=64, dtype="bfloat16")
    result = run_trial(trial, FAST)
    assert result.status in ("ok", "unsupported"), result.error
    if result.status == "ok":
        assert result.kernels and not any(name.startswith("aten::") for name in result.kernels)
