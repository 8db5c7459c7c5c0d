"""Error of an output against its reference: the one definition used by trials and by tests."""

import torch

# Largest rel_err a backend may show against the float64/float32 reference before its timing
# counts (DESIGN.md §4: fp32 < 1e-5 typical, tf32 ~3e-4, bf16/fp16 1e-3..1e-2).
REL_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max_abs_err, rel_err) with rel_err = ||out - ref|| / ||ref||, both in float64.

    A non-finite value anywhere in `out` gives NaN for both, so no comparison can pass it.
    """
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    out64 = out.detach().to(device="cpu", dtype=torch.float64)
    ref64 = ref.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(out64).all():
        return float("nan"), float("nan")
    diff = out64 - ref64
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    ref_norm = ref64.norm().item()
    rel = diff.norm().item() / ref_norm if ref_norm > 0 else diff.norm().item()
    return max_abs, rel


def within_tolerance(rel_err: float, dtype: str) -> bool:
    return rel_err == rel_err and rel_err <= REL_TOLERANCE[dtype]  # NaN never passes
