"""What one point of a sweep is (`Trial`) and what measuring it produced (`TrialResult`)."""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

PHASES = ("prefill", "decode", "train")  # train: forward + backward
DTYPES = ("float32", "float16", "bfloat16")
BACKENDS = ("torch-ref", "torch-sdpa", "triton")


def canonical_json(value: Any) -> str:
    """One spelling per value, so equal configurations hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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

    @property
    def param_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def trial_id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.config()).encode()).hexdigest()
        return digest[:16]

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.param_dict.items()))
        return (
            f"{self.variant}/{self.backend}/{self.phase} B={self.batch} N={self.seq_len} "
            f"H={self.n_heads}/{self.n_kv_heads} D={self.head_dim} {self.dtype}"
            + (f" {params}" if params else "")
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
    flops: float | None = None
    bytes_moved: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    pct_peak: float | None = None
    peak_tflops: float | None = None
    peak_gbps: float | None = None
    peak_mem_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    n_params: int | None = None
    max_abs_err: float | None = None
    rel_err: float | None = None
    task: str | None = None
    accuracy: float | None = None
    loss: float | None = None
    device: str | None = None
    host: str | None = None
    node: str = ""
    interpreted: bool = False
    torch_version: str | None = None
    triton_version: str | None = None
    driver_version: str | None = None
    timestamp: Any = None  # datetime in UTC

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
