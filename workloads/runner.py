"""Run one trial: build inputs, run the backend, check it against the reference, time it.

`run_trial` never raises for a problem of the trial itself: an unsupported combination, an
accuracy failure, an exception or an out-of-memory all come back as a `TrialResult` with a status.
"""

import datetime as dt
import gc
import hashlib
import time
import traceback

import torch

from workloads.accuracy import REL_TOLERANCE, errors, within_tolerance
from workloads.backends import load_kernels
from workloads.environment import environment_fields
from workloads.measure import (
    MeasureSettings,
    device_peaks,
    free_memory,
    is_out_of_memory,
    peak_memory_bytes,
    synchronize,
    time_callable,
)
from workloads.trial import Trial, TrialResult, canonical_json
from workloads.variants import get_variant


def input_seed(trial: Trial, base_seed: int) -> int:
    """The same inputs for every backend of one point, so their outputs compare like for like."""
    point = {k: v for k, v in trial.config().items() if k != "backend"}
    return base_seed + int(hashlib.sha256(canonical_json(point).encode()).hexdigest()[:8], 16)


def _reference_inputs(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """float64 on the CPU; float32 on a GPU, where float64 would be slow (DESIGN.md §4)."""
    ref_device, ref_dtype = (
        (torch.device("cpu"), torch.float64) if device.type == "cpu" else (device, torch.float32)
    )
    return {
        name: t.to(ref_device, ref_dtype) if t.is_floating_point() else t.to(ref_device)
        for name, t in inputs.items()
    }


def _measure(trial: Trial, device: torch.device, settings: MeasureSettings, result: TrialResult) -> None:
    variant = get_variant(trial.variant)
    generator = torch.Generator(device=device).manual_seed(input_seed(trial, settings.seed))
    inputs = variant.make_inputs(trial, device, generator)

    def forward() -> torch.Tensor:
        return variant.run(trial, inputs)

    start = time.perf_counter()
    out = forward()  # the first call compiles (Triton JIT), so it is timed apart from the latency
    synchronize(device)
    result.compile_ms = (time.perf_counter() - start) * 1e3
    result.interpreted = trial.backend == "triton" and load_kernels().is_interpreted()

    if settings.check_accuracy:
        reference = variant.reference(trial, _reference_inputs(inputs, device))
        result.max_abs_err, result.rel_err = errors(out, reference)
        del reference
        if not within_tolerance(result.rel_err, trial.dtype):
            result.status = "error"
            tolerance = REL_TOLERANCE[trial.dtype]
            result.error = (
                f"accuracy check failed: rel_err={result.rel_err:.3e} exceeds {tolerance:.0e} "
                f"for {trial.dtype} (max_abs_err={result.max_abs_err:.3e})"
            )
            return
    del out

    result.peak_mem_bytes = peak_memory_bytes(forward, device)
    timing = time_callable(forward, device, settings)
    result.latency_ms, result.latency_ms_p20, result.latency_ms_p80 = (
        timing.median_ms,
        timing.p20_ms,
        timing.p80_ms,
    )
    result.n_samples = timing.n_samples

    seconds = timing.median_ms * 1e-3
    result.tflops = result.flops / seconds / 1e12
    result.gbps = result.bytes_moved / seconds / 1e9
    result.peak_tflops, result.peak_gbps = device_peaks(device.type, trial.dtype)
    # Roofline: the least time the flops or the bytes need at the measured ceilings, over the time taken.
    bound_seconds = max(
        result.flops / (result.peak_tflops * 1e12), result.bytes_moved / (result.peak_gbps * 1e9)
    )
    result.pct_peak = 100.0 * bound_seconds / seconds
    result.status = "ok"


def _fill_cost(trial: Trial, result: TrialResult) -> None:
    cost = get_variant(trial.variant).cost(trial)
    result.flops, result.bytes_moved, result.n_params = cost.flops, cost.bytes_moved, cost.n_params
    result.kv_bytes_per_token = cost.kv_bytes_per_token
    result.kv_cache_bytes = cost.kv_bytes_per_token * trial.batch * trial.seq_len


def run_trial(trial: Trial, settings: MeasureSettings | None = None) -> TrialResult:
    settings = settings or MeasureSettings()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = TrialResult(status="error", **environment_fields(device.type))
    try:
        _fill_cost(trial, result)
        reason = get_variant(trial.variant).unsupported(trial.backend, trial.phase)
        if reason is not None:
            result.status, result.error = "unsupported", reason
        else:
            _measure(trial, device, settings, result)
    except Exception as exc:  # a failing trial is a result, not a crash of the sweep
        result.status = "oom" if is_out_of_memory(exc) else "error"
        result.error = "".join(traceback.format_exception(exc)).strip()
    finally:
        gc.collect()
        free_memory(device)
    result.timestamp = dt.datetime.now(dt.timezone.utc)
    return result
