"""Clocks, power, temperature and energy of a trial's GPU, through NVML (nvidia-ml-py).

Read before and after the timed calls: a row keeps the lower SM and memory clocks of the two readings,
the higher temperature, the average power over the timed block (the total-energy counter's difference
over the wall time between the readings), the energy of one call (that power × the median latency) and
whether the GPU throttled (any throttle reason but idling or clocks set by the user). Without a GPU or
NVML every field is None; NVML failing (the driver gone mid-sweep) leaves None and one warning per
process, never a failed trial.
"""

import time
import warnings
from dataclasses import dataclass

import torch

# Throttle reasons that say nothing about a measurement: the GPU idles between calls, or runs at the
# application clocks a user set (nvmlClocksThrottleReasonGpuIdle, ...ApplicationsClocksSetting).
BENIGN_THROTTLE = 0x1 | 0x2


@dataclass(frozen=True)
class Reading:
    sm_clock_mhz: int
    mem_clock_mhz: int
    temp_c: int
    throttle_reasons: int
    energy_mj: int  # the device's total since the driver loaded
    when_s: float  # time.perf_counter() of the reading


class Nvml:
    """Readings of the GPU torch uses as device 0 (CUDA_VISIBLE_DEVICES applied), opened on first use."""

    def __init__(self) -> None:
        self.handle = None
        self.failed = False

    def _open(self):
        import pynvml  # here: the driver and CPU hosts never need it

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(0).uuid)  # NVML counts every GPU, CUDA the visible
        return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")

    def read(self) -> Reading | None:
        if self.failed:
            return None
        try:
            if self.handle is None:
                self.handle = self._open()
            nvml, handle = self.handle
            return Reading(
                sm_clock_mhz=nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                mem_clock_mhz=nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
                temp_c=nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                throttle_reasons=nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle),
                energy_mj=nvml.nvmlDeviceGetTotalEnergyConsumption(handle),
                when_s=time.perf_counter(),
            )
        except Exception as exc:  # no library, no driver, a GPU without the counter: nulls, not a failure
            self.failed = True
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"NVML: {reason}: clocks, power and energy are left empty", stacklevel=2)
            return None


FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temp_c", "throttled", "energy_mj", "tokens_per_j")


def device_state_fields(
    before: Reading | None, after: Reading | None, latency_ms: float, tokens_per_call: int | None = None
) -> dict:
    """The row's FIELDS from the readings around the timed calls (every field None without both);
    tokens_per_j only where a call makes `tokens_per_call` tokens (decode)."""
    if before is None or after is None:
        return dict.fromkeys(FIELDS)
    seconds = after.when_s - before.when_s
    power_w = (after.energy_mj - before.energy_mj) / 1e3 / seconds if seconds > 0 else None
    energy_mj = power_w * latency_ms if power_w is not None else None  # W × ms = mJ
    return {
        "sm_clock_mhz": min(before.sm_clock_mhz, after.sm_clock_mhz),
        "mem_clock_mhz": min(before.mem_clock_mhz, after.mem_clock_mhz),
        "power_w": power_w,
        "temp_c": max(before.temp_c, after.temp_c),
        "throttled": bool((before.throttle_reasons | after.throttle_reasons) & ~BENIGN_THROTTLE),
        "energy_mj": energy_mj,
        "tokens_per_j": tokens_per_call / (energy_mj * 1e-3) if tokens_per_call and energy_mj else None,
    }


NVML = Nvml()  # one per process: a worker opens NVML once
