"""The timed output checked again: a backend whose output goes stale during timing is an error row,
one that writes its buffer on every call is ok, and an output that is an input is never poisoned."""

import pytest
import torch

from tests.workloads.variants.cases import make_trial
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
from workloads.variants import get_variant

FAST = MeasureSettings(min_run_time_s=0.01)


def _buffered(real, write_every_call: bool):
    """A backend that returns one output buffer: written on the first call, and on every call or
    (write_every_call=False: a kernel that dropped out of a graph) never again."""
    buffer = {}

    def backend(trial, inputs):
        if "out" not in buffer:
            buffer["out"] = real(trial, inputs).detach().clone()
        elif write_every_call:
            buffer["out"].copy_(real(trial, inputs))
        return buffer["out"]

    return backend


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize(
    "write_every_call,status",
    [
        pytest.param(False, "error", id="stale-buffer"),
        pytest.param(True, "ok", id="buffer-written-each-call"),
    ],
)
def test_a_buffer_not_written_during_timing_is_an_error(phase, write_every_call, status, monkeypatch):
    variant = get_variant("gqa")
    real = variant.implementations[("torch-sdpa", phase)]
    monkeypatch.setitem(variant.implementations, ("torch-sdpa", phase), _buffered(real, write_every_call))
    result = run_trial(make_trial("gqa", backend="torch-sdpa", phase=phase), FAST)
    assert result.status == status, result.error
    if status == "error":
        assert result.error.startswith("output changed during timing: rel_err=nan")
        assert result.rel_err < 1e-5  # the checked call itself was right


def test_a_stale_gradient_in_phase_train_is_caught(monkeypatch):
    """Train re-checks every output: here the forward stays right and one gradient goes stale."""
    variant = get_variant("gqa")
    real = variant.implementations[("torch-sdpa", "prefill")]
    calls = {"n": 0}

    def detaches_k_after_the_checked_call(trial, inputs):
        calls["n"] += 1
        if calls["n"] <= 1:
            return real(trial, inputs)
        return real(trial, {**inputs, "k": inputs["k"].detach()})  # dk drops to zero

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "prefill"), detaches_k_after_the_checked_call)
    result = run_trial(make_trial("gqa", backend="torch-sdpa", phase="train"), FAST)
    assert (
        result.status == "error"
        and "output changed during timing" in result.error
        and "of dk" in result.error
    )


def test_an_output_that_is_an_input_is_not_poisoned(monkeypatch):
    variant = get_variant("mha")

    def returns_v(trial, inputs):  # a (wrong for mha, but) identity-like backend: its output is v itself
        return inputs["v"]

    monkeypatch.setitem(variant.implementations, ("torch-sdpa", "prefill"), returns_v)
    monkeypatch.setattr(type(variant), "reference", lambda self, trial, inputs: inputs["v"])
    result = run_trial(make_trial("mha", backend="torch-sdpa"), FAST)
    assert result.status == "ok", result.error
    assert torch.isfinite(torch.tensor(result.rel_err))
