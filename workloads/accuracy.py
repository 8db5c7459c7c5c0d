"""Error of an output against its reference: the one definition used by trials and by tests."""

import math

import torch

# Largest rel_err a backend may show against the float64/float32 reference before its timing
# counts (docs/architecture.md §4: fp32 < 1e-5 typical, tf32 ~3e-4, bf16/fp16 1e-3..1e-2).
REL_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


def comparison_dtype(out: torch.Tensor, ref: torch.Tensor) -> torch.dtype:
    """The dtype `out - ref` is taken in: float64 on the CPU; elsewhere float32, or the inputs' dtype
    when it is wider (a float64 reference on a GPU stays float64)."""
    if out.device.type == "cpu":
        return torch.float64
    return torch.promote_types(torch.promote_types(out.dtype, ref.dtype), torch.float32)


def error_stats(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[all of out finite (1 or 0), max |out - ref|, ||out - ref||, ||ref||] in float64, on out's device
    (ref joins it there).

    On the CPU the difference is taken in float64, as the CPU reference is. On a GPU it is taken on
    the device in float32 (or the inputs' wider dtype) and the norms are accumulated in float64:
    copying both tensors to the host in float64 cost about 2 s per 32k-token prefill trial, and only
    these four numbers need to leave the device.
    """
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    out, ref = out.detach(), ref.detach().to(out.device)
    wide = comparison_dtype(out, ref)
    ref = ref.to(wide)
    diff = out.to(wide) - ref
    # The inf-norm has no value on an empty tensor; nothing differs there.
    max_abs = torch.linalg.vector_norm(diff, ord=math.inf) if diff.numel() else diff.new_zeros(())
    return torch.stack(
        [
            torch.isfinite(out).all().to(torch.float64),
            max_abs.to(torch.float64),
            torch.linalg.vector_norm(diff, dtype=torch.float64),
            torch.linalg.vector_norm(ref, dtype=torch.float64),
        ]
    )


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max_abs_err, rel_err) with rel_err = ||out - ref|| / ||ref|| (`error_stats`).

    A non-finite value anywhere in `out` gives NaN for both, so no comparison can pass it.
    """
    finite, max_abs, diff_norm, ref_norm = error_stats(out, ref).tolist()  # the one copy to the host
    if not finite:
        return float("nan"), float("nan")
    return max_abs, diff_norm / ref_norm if ref_norm > 0 else diff_norm


def within_tolerance(rel_err: float, dtype: str) -> bool:
    return rel_err == rel_err and rel_err <= REL_TOLERANCE[dtype]  # NaN never passes
