"""Run one trial: build inputs, run the backend, check it against the reference, time it (or, in
the trained phases, train and score a tiny model: `workloads.quality.spec`).

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
from workloads.backends import Unsupported, load_kernels
from workloads.device_state import NVML, device_state_fields
from workloads.environment import environment_fields
from workloads.measure import (
    MeasureSettings,
    device_peaks,
    free_memory,
    is_out_of_memory,
    launched_kernels,
    peak_memory_bytes,
    synchronize,
    time_callable,
)
from workloads.quality.spec import run_trained
from workloads.trial import TRAINED_PHASES, Trial, TrialResult, canonical_json
from workloads.variants import get_variant


def input_seed(trial: Trial, base_seed: int) -> int:
    """The same inputs for every backend of one point, so their outputs compare like for like."""
    point = {k: v for k, v in trial.config().items() if k != "backend"}
    return base_seed + int(hashlib.sha256(canonical_json(point).encode()).hexdigest()[:8], 16)


def _reference_inputs(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """float64 on the CPU; float32 on a GPU, where float64 would be slow (docs/architecture.md §4)."""
    ref_device, ref_dtype = (
        (torch.device("cpu"), torch.float64) if device.type == "cpu" else (device, torch.float32)
    )
    return {
        name: t.to(ref_device, ref_dtype) if t.is_floating_point() else t.to(ref_device)
        for name, t in inputs.items()
    }


class TrainStep:
    """Forward + backward of the trial's backend. Calling it returns (out, d input_1, ...) for every
    floating input (activations and weights), under one fixed random output gradient."""

    def __init__(self, variant, trial: Trial, inputs: dict[str, torch.Tensor], generator: torch.Generator):
        self.variant, self.trial, self.inputs, self.generator = variant, trial, inputs, generator
        self.grad_names = [name for name, t in inputs.items() if t.is_floating_point()]
        self.names = ["output", *(f"d{name}" for name in self.grad_names)]
        self.grad_out: torch.Tensor | None = None
        for name in self.grad_names:
            inputs[name].requires_grad_(True)

    def __call__(self) -> tuple[torch.Tensor, ...]:
        out = self.variant.run(self.trial, self.inputs)
        if self.grad_out is None:
            self.grad_out = torch.randn(
                out.shape, generator=self.generator, device=out.device, dtype=out.dtype
            )
        return _with_grads(out, self.grad_out, self.inputs, self.grad_names)


def _with_grads(out, grad_out, inputs, names) -> tuple[torch.Tensor, ...]:
    grads = torch.autograd.grad(out, [inputs[n] for n in names], grad_out.to(out), allow_unused=True)
    # An input the output does not depend on (e.g. a router past top-k) has a zero gradient.
    return (
        out.detach(),
        *(torch.zeros_like(inputs[n]) if g is None else g for n, g in zip(names, grads, strict=True)),
    )


def _reference_train(variant, trial: Trial, inputs: dict[str, torch.Tensor], grad_out: torch.Tensor):
    names = [name for name, t in inputs.items() if t.is_floating_point()]
    for name in names:
        inputs[name].requires_grad_(True)
    return _with_grads(variant.reference(trial, inputs), grad_out, inputs, names)


def _worst_error(names, outputs, references) -> tuple[str, float, float]:
    """(name, max_abs_err, rel_err) of the output furthest from its reference."""
    worst = None
    for name, got, ref in zip(names, outputs, references, strict=True):
        max_abs, rel = errors(got, ref)
        # NaN (rel != rel) is the worst there is and must never be replaced by a finite error.
        if worst is None or rel != rel or (worst[2] == worst[2] and rel > worst[2]):
            worst = (name, max_abs, rel)
    return worst


def _as_outputs(out) -> tuple[torch.Tensor, ...]:
    """A call's outputs as a tuple: (output,), or in phase train (output, d input_1, ...)."""
    return out if isinstance(out, tuple) else (out,)


def _check_accuracy(variant, trial, inputs, out, forward, device, result: TrialResult):
    """Errors against the high-precision reference (every gradient too in phase train): the references,
    one per output and kept on the CPU for the re-check after timing; None (the row an error) on failure."""
    ref_inputs = _reference_inputs({n: t.detach() for n, t in inputs.items()}, device)
    if trial.phase == "train":
        references = _reference_train(variant, trial, ref_inputs, forward.grad_out)
    else:
        references = (variant.reference(trial, ref_inputs),)
    name, result.max_abs_err, result.rel_err = _worst_error(
        _output_names(forward), _as_outputs(out), references
    )
    if within_tolerance(result.rel_err, trial.dtype):
        return tuple(ref.detach().cpu() for ref in references)  # off the device while memory is measured
    result.status = "error"
    result.error = (
        f"accuracy check failed: rel_err={result.rel_err:.3e} of {name} exceeds "
        f"{REL_TOLERANCE[trial.dtype]:.0e} for {trial.dtype} (max_abs_err={result.max_abs_err:.3e})"
    )
    return None


def _output_names(forward) -> list[str]:
    return forward.names if isinstance(forward, TrainStep) else ["output"]


def _poison(outputs: tuple[torch.Tensor, ...], inputs: dict[str, torch.Tensor]) -> None:
    """NaN into the checked call's outputs before the timed calls: a backend that returns the same buffer
    again without writing it (a kernel that dropped out of a graph, a stale cache) then returns NaN, which
    the re-check after timing catches. An output that is an input's storage is left alone."""
    inputs_storage = {t.untyped_storage().data_ptr() for t in inputs.values()}
    for out in outputs:
        if out.is_floating_point() and out.untyped_storage().data_ptr() not in inputs_storage:
            out.detach().fill_(float("nan"))


class LastOutput:
    """The timed callable, keeping what its latest call returned for the re-check after timing."""

    def __init__(self, forward):
        self.forward, self.last = forward, None

    def __call__(self):
        self.last = self.forward()
        return self.last


def _recheck(trial: Trial, forward, last, references, result: TrialResult) -> bool:
    """The last timed call's outputs against the same references; False (the row an error) when they
    moved out of tolerance during timing."""
    name, max_abs, rel = _worst_error(_output_names(forward), _as_outputs(last), references)
    if within_tolerance(rel, trial.dtype):
        return True
    result.status = "error"
    result.error = (
        f"output changed during timing: rel_err={rel:.3e} of {name} after the timed calls "
        f"(max_abs_err={max_abs:.3e}), {result.rel_err:.3e} at the checked call: a stale or unwritten output"
    )
    return False


def _measure(trial: Trial, device: torch.device, settings: MeasureSettings, result: TrialResult) -> None:
    variant = get_variant(trial.variant)
    generator = torch.Generator(device=device).manual_seed(input_seed(trial, settings.seed))
    inputs = variant.make_inputs(trial, device, generator)

    if trial.phase == "train":
        forward = TrainStep(variant, trial, inputs, generator)
    else:

        def forward() -> torch.Tensor:
            return variant.run(trial, inputs)

    start = time.perf_counter()
    out = forward()  # the first call compiles (Triton JIT), so it is timed apart from the latency
    synchronize(device)
    result.compile_ms = (time.perf_counter() - start) * 1e3
    result.interpreted = trial.backend == "triton" and load_kernels().is_interpreted()

    references = None
    if settings.check_accuracy:
        references = _check_accuracy(variant, trial, inputs, out, forward, device, result)
        if references is None:
            return
        _poison(_as_outputs(out), inputs)
    del out

    result.kernels = launched_kernels(forward, device)
    result.peak_mem_bytes = peak_memory_bytes(forward, device)
    timed = LastOutput(forward)
    before = NVML.read() if device.type == "cuda" else None
    timing = time_callable(timed, device, settings)
    after = NVML.read() if before is not None else None
    tokens = trial.batch if trial.phase == "decode" else None  # one new token per sequence and call
    for name, value in device_state_fields(before, after, timing.median_ms, tokens).items():
        setattr(result, name, value)
    if references is not None and not _recheck(trial, forward, timed.last, references, result):
        return
    del timed
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
    cost = get_variant(trial.variant).trial_cost(trial)
    result.flops, result.bytes_moved, result.n_params = cost.flops, cost.bytes_moved, cost.n_params
    result.kv_bytes_per_token = cost.kv_bytes_per_token
    result.kv_cache_bytes = (
        cost.kv_cache_bytes
        if cost.kv_cache_bytes is not None
        else round(cost.kv_bytes_per_token * trial.batch * trial.seq_len)
    )


def run_trial(trial: Trial, settings: MeasureSettings | None = None) -> TrialResult:
    settings = settings or MeasureSettings()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = TrialResult(status="error", **environment_fields(device.type))
    try:
        _fill_cost(trial, result)
        variant = get_variant(trial.variant)
        reason = variant.unsupported(trial.backend, trial.phase) or variant.unsupported_shape(trial)
        if reason is not None:
            result.status, result.error = "unsupported", reason
        elif trial.phase in TRAINED_PHASES:
            run_trained(trial, device, result)
        else:
            _measure(trial, device, settings, result)
    except Unsupported as exc:  # a backend that refused the point when it ran it (PyTorch's reason)
        result.status, result.error = "unsupported", str(exc)
    except Exception as exc:  # a failing trial is a result, not a crash of the sweep
        result.status = "oom" if is_out_of_memory(exc) else "error"
        result.error = "".join(traceback.format_exception(exc)).strip()
    finally:
        # What the trial left in reference cycles (a failure's traceback holds its tensors) goes before
        # the next trial: on a GPU, so that one large point cannot make the next ones run out of
        # memory. On the CPU, and after an unsupported trial, refcounting frees the tensors and a full
        # collection would cost more than the trial (it walks the whole heap: 0.1-0.8 s in-process).
        if device.type == "cuda" or result.status in ("error", "oom"):
            gc.collect()
        free_memory(device)
    result.timestamp = dt.datetime.now(dt.timezone.utc)
    return result
