"""Timing, device ceilings and peak memory (docs/architecture.md §4).

GPU: `triton.testing.do_bench` (L2 flushed between runs, every sample kept for the quantiles).
CPU: `torch.utils.benchmark.Timer.blocked_autorange`. Peaks are measured on the worker, never
taken from datasheets, and cached per process.
"""

import functools
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler import profile
from torch.utils import benchmark

# CPU ops that name the implementation a dispatching op chose: SDPA's kernels (flash for CPU, math, ...).
DISPATCHED_PREFIXES = ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")
# Top-level CPU events of torch.compile that run nothing: its guard check, and its first-call tracing.
DYNAMO_BOOKKEEPING = ("TorchDynamo Cache Lookup", "dynamo")
COMPILED_REGION_ID = re.compile(r": \d+/\d+$")  # "Torch-Compiled Region: 3/0" -> "Torch-Compiled Region"


@dataclass
class MeasureSettings:
    """How trials are measured; also the `measure` section of the sweep config, whose keys, defaults
    and docs (`attnsweep keys measure`) are these fields."""

    warmup_ms: float = field(
        default=25.0, metadata={"help": "GPU: do_bench warm-up after the first (compiling) call"}
    )
    rep_ms: float = field(default=100.0, metadata={"help": "GPU: do_bench measuring time per trial"})
    min_run_time_s: float = field(
        default=0.5, metadata={"help": "CPU: torch.utils.benchmark blocked_autorange budget per trial"}
    )
    seed: int = field(
        default=0,
        metadata={"help": "inputs are drawn from this seed and the point (the same for every backend)"},
    )
    check_accuracy: bool = field(
        default=True,
        metadata={"help": "compare each backend with the high-precision reference before timing"},
    )

    def check(self) -> None:
        """ValueError "key: reason" for settings no measurement can run with."""
        for key in ("warmup_ms", "rep_ms", "min_run_time_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: {getattr(self, key)} must be positive")


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    n_samples: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quantile(sorted_ms: list[float], q: float) -> float:
    if len(sorted_ms) == 1:
        return sorted_ms[0]
    return statistics.quantiles(sorted_ms, n=100, method="inclusive")[round(q * 100) - 1]


def time_callable(fn: Callable[[], object], device: torch.device, settings: MeasureSettings) -> Timing:
    """Median and 20/80 quantiles of `fn`'s latency; call it once before (JIT compile, caches)."""
    if device.type == "cuda":
        # Here, not at the top: the driver imports this module (MeasureSettings) and never Triton.
        from triton.testing import do_bench

        samples = do_bench(fn, warmup=settings.warmup_ms, rep=settings.rep_ms, return_mode="all")
    else:
        # num_threads: Timer defaults to one thread, which would under-report a multi-core CPU.
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        samples = [t * 1e3 for t in timer.blocked_autorange(min_run_time=settings.min_run_time_s).times]
    ordered = sorted(samples)
    return Timing(statistics.median(ordered), _quantile(ordered, 0.2), _quantile(ordered, 0.8), len(ordered))


def _matmul_ms(n: int, dtype: torch.dtype, device: torch.device, settings: MeasureSettings) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    return time_callable(lambda: a @ b, device, settings).median_ms


@functools.cache
def device_peaks(device_type: str, dtype: str) -> tuple[float, float]:
    """(matmul TFLOP/s in `dtype`, copy GB/s) measured on this device; the roofline's ceilings."""
    device = torch.device(device_type)
    settings = MeasureSettings(rep_ms=200.0, min_run_time_s=0.3)
    n = 8192 if device_type == "cuda" else 1024
    matmul_ms = _matmul_ms(n, getattr(torch, dtype), device, settings)
    elements = (1 << 28) if device_type == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of float32
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_ms = time_callable(lambda: dst.copy_(src), device, settings).median_ms
    tflops = 2 * n**3 / (matmul_ms * 1e-3) / 1e12
    gbps = 2 * src.numel() * src.element_size() / (copy_ms * 1e-3) / 1e9  # read + write
    return tflops, gbps


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak allocated device memory while `fn` runs once, its inputs included (GPU only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def launched_kernels(fn: Callable[[], object], device: torch.device) -> list[str]:
    """What one call of `fn` launched, distinct names in launch order, profiled outside any timing.

    GPU: the device kernels. CPU: the top-level aten ops, each followed by the op a dispatching one
    chose (scaled_dot_product_attention -> _scaled_dot_product_flash_attention_for_cpu, ...), since
    a CPU runs no kernels of its own to name.
    """
    # The autograd profiler, not torch.profiler.profile: the latter's start imports Inductor, Dynamo and
    # Triton (5 s of a worker's first trial on a CPU, and Triton before its interpreter is chosen).
    with profile(use_cpu=True, use_device="cuda" if device.type == "cuda" else None) as profiler:
        fn()
        synchronize(device)
    events = profiler.function_events
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        names = [e.name for e in sorted(kernels, key=lambda e: e.time_range.start)]
    else:
        names = []
        for event in sorted((e for e in events if e.cpu_parent is None), key=lambda e: e.time_range.start):
            if event.name in DYNAMO_BOOKKEEPING:
                continue
            names.append(COMPILED_REGION_ID.sub("", event.name))  # ids differ between processes
            names += [c.name for c in event.cpu_children if c.name.startswith(DISPATCHED_PREFIXES)]
    return list(dict.fromkeys(names))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message.lower() or "can't allocate memory" in message
    )


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
