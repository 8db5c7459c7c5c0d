"""What one point of a sweep is (`Trial`) and what measuring it produced (`TrialResult`)."""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

# The phase names are the row contract's (analysis.schema); workloads code takes them from here.
from analysis.schema import PHASES, TRAINED_PHASES

__all__ = ["DTYPES", "PHASES", "TRAINED_PHASES", "Trial", "TrialResult", "canonical_json"]

DTYPES = ("float32", "float16", "bfloat16")


def canonical_json(value: Any) -> str:
    """One spelling per value, so equal configurations hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Trial:
    """A fully resolved point: every variant constraint already applied (see `Variant.resolve`)."""

    variant: str
    backend: str
    phase: str
    batch: int
    seq_len: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    dtype: str
    causal: bool
    params: str = "{}"  # canonical JSON of the variant's own parameters, defaults filled in
    # Trained phases only: canonical JSON of the task, its parameters and the training settings
    # (`workloads.quality.spec`), and the seed of initialisation, data and order.
    quality: str = ""
    seed: int | None = None
    # Benchmark phases: the kind of inputs (workloads.inputs.INPUT_KINDS), randn unless the inputs axis
    # says otherwise.
    inputs: str = "randn"

    @property
    def param_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    def config(self) -> dict[str, Any]:
        """The identity of the point. `quality` and `seed` are left out where unset, so the benchmark
        phases keep the trial_ids they had before the trained phases existed."""
        config = dataclasses.asdict(self)
        if not self.quality:
            del config["quality"]
        if self.seed is None:
            del config["seed"]
        if self.inputs == "randn":  # the inputs every trial had before the axis existed: ids unchanged
            del config["inputs"]
        return config

    def columns(self) -> dict[str, Any]:
        """Every field, unset ones as None: the configuration columns of a result row."""
        return {**dataclasses.asdict(self), "quality": self.quality or None}

    def row_id(self, heads_kept: int) -> str:
        """trial_id of a prune trial's row at `heads_kept` heads (the trial's own id is its full model)."""
        return _digest({**self.config(), "heads_kept": heads_kept})

    @property
    def trial_id(self) -> str:
        return _digest(self.config())

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.param_dict.items()))
        trained = f" {json.loads(self.quality)['task']} seed={self.seed}" if self.quality else ""
        trained += f" inputs={self.inputs}" if self.inputs != "randn" else ""
        return (
            f"{self.variant}/{self.backend}/{self.phase} B={self.batch} N={self.seq_len} "
            f"H={self.n_heads}/{self.n_kv_heads} D={self.head_dim} {self.dtype}"
            + (f" {params}" if params else "")
            + trained
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Trial":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


@dataclass
class TrialResult:
    """Measurements of one attempt. Fields that do not apply stay None (null in Parquet)."""

    status: str
    error: str | None = None
    latency_ms: float | None = None
    latency_ms_p20: float | None = None
    latency_ms_p80: float | None = None
    n_samples: int | None = None
    compile_ms: float | None = None
    kernels: list[str] | None = None  # what one call launched, in order (`measure.launched_kernels`)
    flops: float | None = None
    bytes_moved: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    pct_peak: float | None = None
    peak_tflops: float | None = None
    peak_gbps: float | None = None
    peak_mem_bytes: int | None = None
    # The GPU around the timed calls (workloads.device_state; None without NVML or a GPU).
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    temp_c: int | None = None
    throttled: bool | None = None
    energy_mj: float | None = None
    tokens_per_j: float | None = None
    kv_cache_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    n_params: int | None = None
    max_abs_err: float | None = None
    rel_err: float | None = None
    task: str | None = None
    accuracy: float | None = None
    loss: float | None = None
    train_steps: int | None = None
    model_params: int | None = None
    train_curve: list[dict[str, float]] | None = None  # [{"step": s, "loss": mean since the last point}]
    heads_kept: int | None = None
    removed_head: str | None = None
    device: str | None = None
    host: str | None = None
    node: str = ""
    gpu: str = ""  # CUDA_VISIBLE_DEVICES of the worker (empty: none set)
    interpreted: bool = False
    torch_version: str | None = None
    triton_version: str | None = None
    driver_version: str | None = None
    timestamp: Any = None  # datetime in UTC
    # Phase prune: one entry per number of heads kept ({"heads_kept", "accuracy", "removed_head"}),
    # the full model first. Not a column: the sweep writes one row per entry.
    pruning: list[dict[str, Any]] | None = None
    # Runs of the trial in this invocation (more than 1 when its worker died and it was run again).
    # Not a column: it adds to the row's `attempt`.
    tries: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The result columns of a row."""
        fields = dataclasses.asdict(self)
        del fields["pruning"], fields["tries"]
        return fields
