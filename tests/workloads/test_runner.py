"""run_trial: every outcome of a trial becomes a TrialResult with its status, never an exception."""

import pytest
import torch

from workloads.measure import MeasureSettings
from workloads.runner import input_seed, run_trial
from workloads.trial import Trial
from workloads.variants import VARIANTS, register
from workloads.variants.gqa import GroupedQueryAttention

FAST = MeasureSettings(min_run_time_s=0.01)


def trial(variant="gqa", backend="torch-sdpa", phase="prefill", **overrides) -> Trial:
    point = {
        "variant": variant,
        "backend": backend,
        "phase": phase,
        "batch": 2,
        "seq_len": 33,
        "n_heads": 4,
        "n_kv_heads": 2,
        "head_dim": 16,
        "dtype": "float32",
        "causal": True,
        **overrides,
    }
    return Trial(**VARIANTS[variant].resolve(point))


class FaultyAttention(GroupedQueryAttention):
    """Test-only: GQA whose torch-ref backend misbehaves on command; no triton implementation."""

    def __init__(self, name, fault):
        super().__init__(name, f"test-only: {fault}")
        impls = dict(GroupedQueryAttention.implementations)
        impls[("torch-ref", "prefill")] = getattr(self, fault)
        del impls[("triton", "prefill")], impls[("triton", "decode")]
        self.implementations = impls

    def raises(self, trial, inputs):
        raise RuntimeError("kernel exploded")

    def wrong(self, trial, inputs):
        return torch.zeros_like(inputs["q"])

    def nan(self, trial, inputs):
        return torch.full_like(inputs["q"], float("nan"))

    def oom(self, trial, inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


for _fault in ("raises", "wrong", "nan", "oom"):
    if f"test-{_fault}" not in VARIANTS:
        register(FaultyAttention(f"test-{_fault}", _fault))


@pytest.mark.parametrize("backend,phase", [("torch-ref", "prefill"), ("torch-sdpa", "decode")])
def test_ok_trial_has_every_measurement(backend, phase):
    result = run_trial(trial(backend=backend, phase=phase), FAST)
    assert result.status == "ok", result.error
    assert result.rel_err < 1e-5 and result.max_abs_err < 1e-4
    assert result.latency_ms > 0 and result.latency_ms_p20 <= result.latency_ms <= result.latency_ms_p80
    assert result.n_samples >= 1 and result.compile_ms > 0
    assert result.tflops > 0 and result.gbps > 0 and 0 < result.pct_peak
    assert result.peak_tflops > 0 and result.peak_gbps > 0
    assert result.kv_cache_bytes == result.kv_bytes_per_token * 2 * 33
    assert result.device and result.host and result.torch_version and result.timestamp is not None
    assert result.interpreted is False


def test_triton_runs_interpreted_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("on a GPU Triton is compiled")
    result = run_trial(trial(backend="triton", seq_len=20), FAST)
    assert result.status == "ok", result.error
    assert result.interpreted is True and result.rel_err < 1e-5


def test_backends_see_the_same_inputs():
    a, b = trial(backend="torch-ref"), trial(backend="triton")
    assert input_seed(a, 0) == input_seed(b, 0) != input_seed(trial(seq_len=34), 0)


@pytest.mark.parametrize(
    "fault,status,message",
    [
        pytest.param("raises", "error", "RuntimeError: kernel exploded", id="exception"),
        pytest.param("wrong", "error", "accuracy check failed", id="wrong-output"),
        pytest.param("nan", "error", "accuracy check failed: rel_err=nan", id="nan-output"),
        pytest.param("oom", "oom", "CUDA out of memory", id="oom"),
    ],
)
def test_failures_become_results(fault, status, message):
    result = run_trial(trial(variant=f"test-{fault}", backend="torch-ref"), FAST)
    assert result.status == status
    assert message in result.error
    assert result.latency_ms is None  # nothing is timed after a failure


def test_unsupported_combination_is_reported():
    result = run_trial(trial(variant="test-raises", backend="triton"), FAST)
    assert result.status == "unsupported"
    assert result.error == "test-raises has no triton implementation of phase prefill"
    assert result.kv_bytes_per_token is not None  # the analytic columns are still filled


def test_unknown_variant_is_an_error_row():
    bogus = Trial("nope", "torch-ref", "prefill", 1, 8, 2, 2, 16, "float32", True)
    result = run_trial(bogus, FAST)
    assert result.status == "error" and "unknown variant 'nope'" in result.error
