"""The one comparison helper every test uses against a reference."""

import torch

from workloads.accuracy import errors


def assert_close(out: torch.Tensor, ref: torch.Tensor, *, rel_tol: float, name: str = "output") -> None:
    """rel_err = ||out - ref|| / ||ref|| below rel_tol; shapes equal; NaN or inf never pass."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    max_abs, rel = errors(out, ref)
    assert rel == rel, f"{name}: non-finite values in the output"
    assert rel < rel_tol, f"{name}: rel_err {rel:.3e} >= {rel_tol:.1e} (max abs err {max_abs:.3e})"


def random_tensor(*shape: int, dtype=torch.float32, device="cpu", generator=None) -> torch.Tensor:
    """Standard normal values (never zeros) in float32, then cast: every dtype sees the same draw."""
    return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
