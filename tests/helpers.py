"""Shared test helpers: the one comparison against a reference every test uses, and the CLI run in a
fresh process."""

import os
import subprocess
import sys
from pathlib import Path

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


def run_attnsweep(cwd: Path, code: Path, *args: str, plugins: str = "") -> subprocess.CompletedProcess:
    """`python -m orchestrator ARGS` in a fresh process at `cwd`, importing the packages from `code`
    (the checkout, or a copy of it) with ATTNSWEEP_PLUGINS=`plugins` (none by default)."""
    env = {**os.environ, "PYTHONPATH": str(code), "ATTNSWEEP_PLUGINS": plugins}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
