"""Clocks, power and energy through NVML: without a GPU (or its driver) every field is null and NVML's
failure is one warning, never a failed trial; on a GPU the fields are filled."""

import warnings

import pytest
import torch

from tests.workloads.variants.cases import make_trial
from workloads.device_state import FIELDS, Nvml, Reading, device_state_fields
from workloads.measure import MeasureSettings
from workloads.runner import run_trial

FAST = MeasureSettings(min_run_time_s=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU and its driver")
def test_without_a_driver_nvml_reads_nothing_and_warns_once():
    nvml = Nvml()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert nvml.read() is None and nvml.read() is None
    assert len(caught) == 1 and str(caught[0].message).startswith("NVML: ")


def test_a_cpu_trial_has_null_clocks_power_and_energy():
    result = run_trial(make_trial("gqa", backend="torch-sdpa", phase="decode"), FAST)
    assert result.status == "ok", result.error
    assert all(getattr(result, name) is None for name in FIELDS)


def _reading(sm, mem, temp, reasons, energy_mj, when_s):
    return Reading(sm, mem, temp, reasons, energy_mj, when_s)


@pytest.mark.parametrize(
    "reasons,throttled",
    [
        pytest.param((0x0, 0x1), False, id="idle"),
        pytest.param((0x2, 0x0), False, id="application-clocks"),
        pytest.param((0x0, 0x20), True, id="thermal-slowdown"),
        pytest.param((0x4, 0x0), True, id="power-cap"),
    ],
)
def test_fields_from_the_readings_around_the_timed_calls(reasons, throttled):
    before = _reading(1980, 2619, 41, reasons[0], 1_000_000, 10.0)
    after = _reading(1755, 2619, 47, reasons[1], 1_700_000, 12.0)  # 700 J over 2 s: 350 W
    fields = device_state_fields(before, after, latency_ms=0.2, tokens_per_call=16)
    assert fields["sm_clock_mhz"] == 1755 and fields["mem_clock_mhz"] == 2619 and fields["temp_c"] == 47
    assert fields["power_w"] == pytest.approx(350.0) and fields["energy_mj"] == pytest.approx(70.0)
    assert fields["throttled"] is throttled
    assert fields["tokens_per_j"] == pytest.approx(16 / 0.07)  # 16 tokens for 70 mJ
    assert device_state_fields(before, after, latency_ms=0.2)["tokens_per_j"] is None  # not decode
    assert device_state_fields(before, None, 0.2) == dict.fromkeys(FIELDS)


@pytest.mark.gpu
def test_on_a_gpu_a_trial_records_clocks_power_and_energy():
    result = run_trial(
        make_trial("gqa", backend="torch-sdpa", phase="decode", seq_len=4096, dtype="bfloat16"), FAST
    )
    assert result.status == "ok", result.error
    assert result.sm_clock_mhz > 0 and result.mem_clock_mhz > 0 and result.temp_c > 0
    assert result.power_w > 0 and result.energy_mj > 0 and result.tokens_per_j > 0
    assert result.throttled in (True, False)
