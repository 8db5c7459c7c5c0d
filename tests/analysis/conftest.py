"""A realistic results dataset written through the real store: two runs of a small MHA/GQA/MQA sweep.

Run 1 (GPU host) covers variants × backends × phases × seq_lens, triton decode rows ran in the CPU
interpreter, with one error (a traceback full of '<' and '&'), one oom and one unsupported point.
Run 2, a day later, re-runs three trials: one now faster (the report must take it), the oom one now
ok, and one that fails this time (the report must keep run 1's ok row).

Beside it: the heads dataset (variants × backends × phases × heads, for the sections by heads), and the
vendor dataset (PyTorch's kernels side by side, each with what it launched, for the `best` baseline and
the kernel SDPA's dispatcher picked).
"""

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from analysis.schema import COLUMNS
from analysis.store import ResultStore, read_results

SWEEP = "fixture"
RUN_1, RUN_2 = "run-20250301-a1b2", "run-20250302-c3d4"
DEVICE = "NVIDIA H100 80GB HBM3"
HOST = "gpu-node-07"
VARIANTS = {"mha": 8, "gqa": 2, "mqa": 1}  # variant -> n_kv_heads, with n_heads = 8
BACKENDS = ("torch-ref", "torch-sdpa", "triton")
SEQ_LENS = (128, 384, 1000)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "<kernels/flash.py>", line 42, in flash_attention\n'
    "    assert BLOCK_N <= seq_len & mask\n"
    "RuntimeError: triton compile failed: <ptxas> shared memory 232448 > 227 KiB & spills"
)
# The run-1 values that run 2 replaces or keeps, for the selection-rule test.
FASTER_TRIAL = dict(variant="mha", backend="torch-sdpa", phase="prefill", seq_len=384)
FASTER_LATENCY = 0.0123
KEPT_TRIAL = dict(variant="gqa", backend="triton", phase="prefill", seq_len=128)
OOM_TRIAL = dict(variant="mha", backend="torch-ref", phase="prefill", seq_len=1000)
TIMEOUT = "trial exceeded its 600 s limit"
ERROR_TRIAL = dict(variant="mqa", backend="triton", phase="prefill", seq_len=1000)
UNSUPPORTED_TRIAL = dict(variant="mqa", backend="torch-sdpa", phase="decode", seq_len=128)


def _trial_id(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def make_row(
    run_id: str,
    when: datetime,
    *,
    variant: str,
    backend: str,
    phase: str,
    seq_len: int,
    status: str = "ok",
    latency_ms: float | None = None,
    error: str | None = None,
    n_heads: int = 8,
    head_dim: int = 64,
    batch: int = 2,
    dtype: str = "float16",
    kernels: list[str] | None = None,
) -> dict:
    """One row with every schema column, measured numbers from a toy cost model. KV heads: as many as
    query heads for mha, else the variant's VARIANTS count."""
    n_kv = n_heads if variant == "mha" else VARIANTS[variant]
    config = dict(
        variant=variant,
        backend=backend,
        phase=phase,
        batch=batch,
        seq_len=seq_len,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        dtype=dtype,
        causal=True,
        params="{}",
    )
    interpreted = backend == "triton" and phase == "decode"
    row = {c: None for c in COLUMNS}
    row.update(
        config,
        sweep=SWEEP,
        run_id=run_id,
        trial_id=_trial_id(config),
        attempt=1,
        status=status,
        error=error,
        device="cpu" if interpreted else DEVICE,
        host=HOST,
        node="",
        interpreted=interpreted,
        torch_version="2.13.0+cu128",
        triton_version="3.6.0",
        driver_version="580.65.06",
        code_version="4f2c9e1+dirty",
        timestamp=when,
        kernels=kernels,
    )
    if status != "ok":
        return row
    q_len = 1 if phase == "decode" else seq_len
    flops = 4.0 * batch * n_heads * q_len * (seq_len + 1) / 2 * head_dim * (3.5 if phase == "train" else 1)
    kv_bytes = 2 * batch * n_kv * seq_len * head_dim * 2
    speed = {"torch-ref": 3.0, "torch-sdpa": 1.0, "triton": 0.8}.get(backend, 1.0) * (1 + n_kv / 8)
    if latency_ms is None:
        latency_ms = speed * (1e-4 * seq_len if phase == "decode" else 2e-5 * seq_len**1.6) + 0.01
        latency_ms *= n_heads / 8 * (3 if phase == "train" else 1)
        latency_ms *= 400 if interpreted else 1
    row.update(
        latency_ms=latency_ms,
        latency_ms_p20=latency_ms * 0.97,
        latency_ms_p80=latency_ms * 1.04,
        n_samples=100,
        compile_ms=850.0 if backend == "triton" else None,
        flops=flops,
        bytes_moved=float(kv_bytes),
        tflops=flops / latency_ms / 1e9,
        gbps=kv_bytes / latency_ms / 1e6,
        peak_tflops=700.0,
        peak_gbps=3000.0,
        pct_peak=100 * max(flops / 700e12, kv_bytes / 3000e9) / (latency_ms / 1e3),
        peak_mem_bytes=kv_bytes * 3,
        kv_cache_bytes=kv_bytes,
        kv_bytes_per_token=2 * n_kv * head_dim * 2,
        n_params=4 * (n_heads * head_dim) ** 2,
        max_abs_err=0.0 if backend == "torch-ref" else 1.5e-3 * n_kv,
        rel_err=2e-4 if backend == "torch-ref" else 4e-4 * n_kv,
    )
    return row


def fixture_rows() -> tuple[list[dict], list[dict]]:
    t1 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    run1 = []
    for i, (variant, backend, phase, seq_len) in enumerate(
        (v, b, p, s) for v in VARIANTS for b in BACKENDS for p in ("prefill", "decode") for s in SEQ_LENS
    ):
        point = dict(variant=variant, backend=backend, phase=phase, seq_len=seq_len)
        kwargs: dict = {}
        if point == OOM_TRIAL:
            kwargs = dict(status="oom", error="CUDA out of memory. Tried to allocate 2.00 GiB")
        elif point == ERROR_TRIAL:
            kwargs = dict(status="error", error=TRACEBACK)
        elif point == UNSUPPORTED_TRIAL:
            kwargs = dict(status="unsupported", error="torch-sdpa has no decode path for mqa")
        run1.append(make_row(RUN_1, t1 + timedelta(seconds=i), **point, **kwargs))
    t2 = t1 + timedelta(days=1)
    run2 = [
        make_row(RUN_2, t2, **FASTER_TRIAL, latency_ms=FASTER_LATENCY),
        make_row(RUN_2, t2 + timedelta(seconds=1), **OOM_TRIAL),
        make_row(RUN_2, t2 + timedelta(seconds=2), **KEPT_TRIAL, status="timeout", error=TIMEOUT),
    ]
    return run1, run2


HEADS = (4, 6, 12)  # query heads of the heads dataset: not only powers of two
HEADS_SEQ_LENS = (100, 384, 1000)
HEADS_HEAD_DIM, HEADS_BATCH = 48, 3


def heads_rows() -> list[dict]:
    """One run over variants × backends × phases prefill, decode, train × heads × lengths, bf16, head
    dim 48, batch 3, with the fixture's failures: triton decode interpreted, one oom, one error, one
    unsupported. For the sections that plot against heads and the browser test."""
    t0 = datetime(2025, 4, 1, 9, 0, tzinfo=timezone.utc)
    rows = []
    points = [
        (v, b, p, h, s)
        for v in VARIANTS
        for b in BACKENDS
        for p in ("prefill", "decode", "train")
        for h in HEADS
        for s in HEADS_SEQ_LENS
    ]
    for i, (variant, backend, phase, n_heads, seq_len) in enumerate(points):
        kwargs: dict = {}
        if (variant, backend, phase, n_heads, seq_len) == ("mha", "torch-ref", "train", 12, 1000):
            kwargs = dict(status="oom", error="CUDA out of memory. Tried to allocate 3.00 GiB")
        elif (variant, backend, phase, n_heads, seq_len) == ("gqa", "triton", "train", 6, 100):
            kwargs = dict(status="error", error=TRACEBACK)
        elif (variant, backend, phase) == ("mqa", "torch-sdpa", "train") and n_heads == 4 and seq_len == 384:
            kwargs = dict(status="unsupported", error="torch-sdpa has no train path for this point")
        rows.append(
            make_row(
                "run-heads",
                t0 + timedelta(seconds=i),
                variant=variant,
                backend=backend,
                phase=phase,
                seq_len=seq_len,
                n_heads=n_heads,
                head_dim=HEADS_HEAD_DIM,
                batch=HEADS_BATCH,
                dtype="bfloat16",
                **kwargs,
            )
        )
    for row in rows:
        row["sweep"] = "heads"
    return rows


@pytest.fixture(scope="session")
def heads_dir(tmp_path_factory) -> object:
    """The heads dataset written through the real store: `<results_dir>/heads/`."""
    root = tmp_path_factory.mktemp("heads-results")
    store = ResultStore(root, "heads", "run-heads")
    store.append(heads_rows())
    store.finalize()
    return root / "heads"


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> object:
    """The dataset directory `<results_dir>/fixture/` holding both runs."""
    root = tmp_path_factory.mktemp("results")
    for run_id, rows in zip((RUN_1, RUN_2), fixture_rows(), strict=True):
        store = ResultStore(root, SWEEP, run_id)
        store.append(rows[: len(rows) // 2])
        store.append(rows[len(rows) // 2 :])
        store.finalize()
    return root / SWEEP


@pytest.fixture(scope="session")
def results_df(results_dir):
    return read_results(results_dir)


# What one call launched, as the `kernels` column records it (GPU kernel names, shortened templates).
FLASH_KERNEL = (
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false>>(Flash_fwd_params)"
)
EFFICIENT_KERNEL = (
    "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<half>::Params)"
)
CUDNN_KERNEL = "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64_4x1x1_kernel0_0"
MATH_KERNELS = [
    "ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_nn",
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, c10::Half, float>",
]
COPY_KERNEL = (
    "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<direct_copy_kernel_cuda>>"
)
VENDOR_KERNELS = {
    "sdpa-flash": [FLASH_KERNEL],
    "sdpa-efficient": [EFFICIENT_KERNEL],
    "sdpa-cudnn": [CUDNN_KERNEL],
    "sdpa-math": MATH_KERNELS,
    "flex": ["triton_tem_fused_0"],
    "triton": ["_attn_fwd"],
}
# Speed against sdpa-flash by backend and length: cuDNN wins at 1000 tokens, flex at 128 (decode: the
# efficient kernel everywhere); triton beats them all but is not PyTorch's, so never the baseline.
VENDOR_SPEED = {
    "torch-sdpa": (0.95, 1.02, 0.72),
    "sdpa-flash": (1.0, 1.0, 1.0),
    "sdpa-efficient": (1.3, 1.2, 1.1),
    "sdpa-cudnn": (1.2, 1.1, 0.7),
    "sdpa-math": (3.0, 4.0, 5.0),
    "flex": (0.9, 1.05, 1.2),
    "triton": (0.6, 0.6, 0.6),
}
VENDOR_DECODE_SPEED = {
    "sdpa-efficient": 0.5,
    "torch-sdpa": 0.55,
    "sdpa-math": 2.0,
    "flex": 0.8,
    "triton": 0.4,
}
# torch-sdpa's pick at each (phase, variant, length): flash, then cuDNN at 1000 tokens; in decode the
# efficient kernel for mha and math for gqa (after a copy: the first matching name is the kernel's).
SDPA_PICKS = {
    ("prefill", 128): [FLASH_KERNEL],
    ("prefill", 384): [FLASH_KERNEL],
    ("prefill", 1000): [CUDNN_KERNEL],
    ("decode", "mha"): [EFFICIENT_KERNEL],
    ("decode", "gqa"): [COPY_KERNEL, *MATH_KERNELS],
}
VENDOR_UNSUPPORTED = "sdpa-cudnn: cuDNN attention has no kernel for a query of one token"
VENDOR_ERROR_TRIAL = dict(variant="mha", backend="sdpa-cudnn", phase="prefill", seq_len=384)


def _vendor_point(variant: str, backend: str, phase: str, seq_len: int) -> dict:
    """make_row's keywords for one point of the vendor dataset."""
    length = SEQ_LENS.index(seq_len)
    base_ms = 1e-4 * seq_len if phase == "decode" else 2e-5 * seq_len**1.6
    kwargs: dict = dict(variant=variant, backend=backend, phase=phase, seq_len=seq_len)
    if phase == "decode" and backend == "sdpa-cudnn":
        return kwargs | dict(status="unsupported", error=VENDOR_UNSUPPORTED)
    if dict(variant=variant, backend=backend, phase=phase, seq_len=seq_len) == VENDOR_ERROR_TRIAL:
        return kwargs | dict(status="error", error=TRACEBACK)
    if phase == "decode":
        speed = VENDOR_DECODE_SPEED.get(backend, 1.0)
        picked = SDPA_PICKS["decode", variant]
    else:
        speed = VENDOR_SPEED[backend][length]
        picked = SDPA_PICKS["prefill", seq_len]
    kernels = picked if backend == "torch-sdpa" else VENDOR_KERNELS[backend]
    return kwargs | dict(latency_ms=speed * base_ms * (1.3 if variant == "mha" else 1.0), kernels=kernels)


def vendor_rows() -> list[dict]:
    """One run of mha and gqa on every PyTorch backend and triton, prefill and decode, each ok row with
    the kernels it launched; sdpa-cudnn unsupported in decode and failing at one prefill point."""
    t0 = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)
    points = [
        (v, b, p, s)
        for v in ("mha", "gqa")
        for b in VENDOR_SPEED
        for p in ("prefill", "decode")
        for s in SEQ_LENS
    ]
    rows = [
        make_row("run-vendor", t0 + timedelta(seconds=i), **_vendor_point(*point))
        for i, point in enumerate(points)
    ]
    for row in rows:
        row["sweep"] = "vendor"
        row["interpreted"], row["device"] = False, DEVICE  # a GPU run: triton decode compiled too
    return rows
