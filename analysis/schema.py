"""The result dataset's columns: the contract between workers, the store, MLflow and the reports.

One row per trial attempt that reached a terminal status. docs/architecture.md §3 lists the required columns;
the extra ones (attempt, flops, bytes_moved, peaks, n_params, compile_ms, versions) let a report
redo the arithmetic without the code that produced the row.
"""

import pyarrow as pa

# Phase and status names, defined once for every layer: this module is the row contract, and the one
# analysis module that workloads may import (docs/architecture.md §1).

# train: forward + backward; quality: a tiny model trained and scored on a synthetic task;
# prune: the same model trained, then its heads removed greedily (one row per number of heads kept).
PHASES = ("prefill", "decode", "train", "quality", "prune")
TRAINED_PHASES = ("quality", "prune")  # a model is trained: no latency, a task, a seed

STATUSES = ("ok", "oom", "error", "timeout", "unsupported")
# Kinds of benchmark inputs (workloads/inputs.py makes them), randn first: the kind every row had before
# the axis existed (their `inputs` is null).
INPUT_KINDS = ("randn", "large_logits", "outliers", "long_tail")
# The trial ran as planned: measured (ok), or a point its backend does not offer (the row says why).
PLANNED_STATUSES = ("ok", "unsupported")
# Every other status is a failure: reports list it, MLflow closes the trial's run as FAILED.
FAILED_STATUSES = tuple(status for status in STATUSES if status not in PLANNED_STATUSES)
# Failures that say nothing about the point (a bug, a crash, a hang; an oom would recur at the same
# point): resume runs them again unless retry_failed=false, and gpu_check's sweep stage fails on them.
RERUN_STATUSES = ("error", "timeout")
# A trial whose latest row has one of these is done: resume does not run it again.
KEPT_BY_RESUME = tuple(status for status in STATUSES if status not in RERUN_STATUSES)

_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("sweep", pa.string(), "sweep name"),
    ("run_id", pa.string(), "id of the invocation that produced the row"),
    ("trial_id", pa.string(), "stable hash of the trial's resolved configuration"),
    ("attempt", pa.int32(), "runs of the trial: its earlier rows (resume) + its runs in this invocation"),
    ("variant", pa.string(), "variant registry name"),
    (
        "backend",
        pa.string(),
        "torch-ref | torch-sdpa | sdpa-flash | sdpa-efficient | sdpa-cudnn | sdpa-math | flex | triton, "
        "or a plugin's",
    ),
    ("phase", pa.string(), " | ".join(PHASES)),
    ("batch", pa.int64(), "sequences per batch (quality/prune: per training step)"),
    ("seq_len", pa.int64(), "tokens per sequence (prefill, task length) or cached tokens (decode)"),
    ("n_heads", pa.int64(), "query heads"),
    ("n_kv_heads", pa.int64(), "key/value heads"),
    ("head_dim", pa.int64(), "elements per head"),
    ("dtype", pa.string(), "float32 | float16 | bfloat16"),
    ("causal", pa.bool_(), "causal mask (decode is causal by construction)"),
    ("params", pa.string(), "JSON of the variant's own parameters"),
    ("quality", pa.string(), "phases quality/prune: JSON of task, task parameters, training settings"),
    ("seed", pa.int64(), "phases quality/prune: seed of initialisation, data and order"),
    ("inputs", pa.string(), "kind of inputs: " + " | ".join(INPUT_KINDS)),
    ("status", pa.string(), " | ".join(STATUSES)),
    ("error", pa.string(), "message (and traceback) for the non-ok rows"),
    ("latency_ms", pa.float64(), "median of the timed runs"),
    ("latency_ms_p20", pa.float64(), "20th percentile of the timed runs"),
    ("latency_ms_p80", pa.float64(), "80th percentile of the timed runs"),
    ("n_samples", pa.int64(), "timed runs behind the quantiles"),
    ("compile_ms", pa.float64(), "first call, JIT compile included (not part of latency)"),
    (
        "kernels",
        pa.list_(pa.string()),
        "what one call launched, distinct names in launch order: GPU kernels; on the CPU the top-level "
        "aten ops (with the kernel scaled_dot_product_attention dispatched to)",
    ),
    ("flops", pa.float64(), "analytic FLOPs of one forward"),
    ("bytes_moved", pa.float64(), "analytic bytes read and written by one forward"),
    ("tflops", pa.float64(), "flops / latency"),
    ("gbps", pa.float64(), "bytes_moved / latency"),
    ("pct_peak", pa.float64(), "roofline bound time / latency, in percent of the measured peaks"),
    ("peak_tflops", pa.float64(), "measured matmul peak of the device in this dtype"),
    ("peak_gbps", pa.float64(), "measured copy bandwidth of the device"),
    ("peak_mem_bytes", pa.int64(), "measured peak device memory of one forward (GPU only)"),
    ("sm_clock_mhz", pa.int64(), "GPU SM clock, the lower of NVML's readings before and after timing"),
    ("mem_clock_mhz", pa.int64(), "GPU memory clock, the lower of the readings before and after timing"),
    ("power_w", pa.float64(), "GPU power averaged over the timed calls (NVML's energy counter)"),
    ("temp_c", pa.int64(), "GPU temperature, the higher of the readings before and after timing"),
    ("throttled", pa.bool_(), "the GPU throttled around the timed calls (other than idling or set clocks)"),
    ("energy_mj", pa.float64(), "energy of one call: power_w × latency_ms"),
    ("tokens_per_j", pa.float64(), "decode: tokens (one per sequence) per joule"),
    ("kv_cache_bytes", pa.int64(), "analytic decode cache for (batch, seq_len), one layer"),
    ("kv_bytes_per_token", pa.int64(), "analytic decode cache per token, one layer"),
    ("n_params", pa.int64(), "parameters of one attention layer with d_model = n_heads * head_dim"),
    ("max_abs_err", pa.float64(), "max |out - ref| against the high-precision reference"),
    ("rel_err", pa.float64(), "||out - ref|| / ||ref||"),
    ("task", pa.string(), "phases quality/prune: synthetic task"),
    ("accuracy", pa.float64(), "phases quality/prune: held-out accuracy on the labelled positions"),
    ("loss", pa.float64(), "phases quality/prune: mean training loss over the last logged steps"),
    ("train_steps", pa.int64(), "phases quality/prune: optimizer steps (prune: of the full model)"),
    ("model_params", pa.int64(), "phases quality/prune: parameters of the whole trained model"),
    (
        "train_curve",
        pa.list_(pa.struct([("step", pa.int64()), ("loss", pa.float64())])),
        "phases quality/prune: mean training loss per logged step",
    ),
    ("heads_kept", pa.int64(), "phase prune: heads left unmasked over all layers"),
    ("removed_head", pa.string(), "phase prune: 'layer.head' removed to reach this row (null: full model)"),
    ("device", pa.string(), "GPU or CPU name"),
    ("host", pa.string(), "hostname of the worker"),
    ("node", pa.string(), "Ray node id (empty without Ray)"),
    ("gpu", pa.string(), "CUDA_VISIBLE_DEVICES of the worker that ran the trial (empty: none set)"),
    ("interpreted", pa.bool_(), "Triton ran in its CPU interpreter: latency not meaningful"),
    ("torch_version", pa.string(), "torch on the worker"),
    ("triton_version", pa.string(), "triton on the worker (empty when not installed)"),
    ("driver_version", pa.string(), "GPU driver (empty on CPU)"),
    ("code_version", pa.string(), "git commit of the driver, '+dirty' when modified"),
    (
        "impl_hash",
        pa.string(),
        "hash of the code the trial measured (variant file; kernel family sources or torch version): "
        "resume reruns a trial whose code changed",
    ),
    ("timestamp", pa.timestamp("us", tz="UTC"), "UTC time the trial finished"),
]

RESULT_SCHEMA = pa.schema(
    [pa.field(name, dtype, metadata={"description": doc}) for name, dtype, doc in _COLUMNS]
)
COLUMNS: tuple[str, ...] = tuple(RESULT_SCHEMA.names)
DESCRIPTIONS: dict[str, str] = {name: doc for name, _, doc in _COLUMNS}
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in RESULT_SCHEMA if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
)
# Columns that identify a point of a sweep: two rows with equal values measure the same thing.
CONFIG_COLUMNS = (
    "variant",
    "backend",
    "phase",
    "batch",
    "seq_len",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "dtype",
    "causal",
    "params",
    "quality",
    "seed",
    "inputs",
    "heads_kept",
)
