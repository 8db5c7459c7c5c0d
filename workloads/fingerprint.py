"""What code a trial measures, as a hash (`impl_hash`): resume reruns a trial whose code changed.

A trial's fingerprint covers its variant's file (the reference it is checked against, and its own
implementations) and what its backend runs: for `triton`, the source of the kernel families the
variant's phase launches (`Variant.triton_kernels`) and the kernels' shared modules; for the backends
PyTorch ships, the torch version (and `workloads/flex.py`, attnsweep's Flex engine, for flex); for a
plugin backend, the file of its code. The driver computes it from files alone: Triton is never
imported here.
"""

import functools
import hashlib
import inspect
from pathlib import Path

import torch

from workloads.backends import get_backend
from workloads.trial import TRAINED_PHASES, Trial
from workloads.variants import get_variant

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding kernels/ and workloads/
KERNELS = PACKAGE_ROOT / "kernels"
# Modules every kernel family imports or is found through.
KERNELS_SHARED = ("__init__.py", "_common.py", "_families.py")
FLEX_ENGINE = Path(__file__).resolve().parent / "flex.py"
QUALITY = Path(__file__).resolve().parent / "quality"


def _python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _kernel_files(families: tuple[str, ...]) -> list[Path]:
    """The shared kernel modules and each family folder's files; every family's where one named is not
    a folder of kernels/ (a family found elsewhere, e.g. a test's)."""
    folders = [KERNELS / name for name in families]
    if not all(folder.is_dir() for folder in folders):
        folders = [f for f in sorted(KERNELS.iterdir()) if f.is_dir() and not f.name.startswith("_")]
    return [KERNELS / name for name in KERNELS_SHARED] + [p for f in folders for p in _python_files(f)]


def _code_files(variant_name: str, backend_name: str, phase: str) -> tuple[list[Path], str]:
    """(source files, version text) that decide what a trial of (variant, backend, phase) measures."""
    variant = get_variant(variant_name)
    files = [Path(inspect.getsourcefile(type(variant)))]
    torch_version = f"torch {torch.__version__}"
    if phase in TRAINED_PHASES:  # the reference layer, trained by workloads/quality
        return files + _python_files(QUALITY), torch_version
    backend = get_backend(backend_name)
    forward_phase = "prefill" if phase == "train" else phase
    if backend.implementation == "triton":
        return files + _kernel_files(variant.triton_kernels.get(forward_phase, ())), ""
    if backend.implementation == "flex":
        return files + [FLEX_ENGINE], torch_version
    if backend.implementation in ("torch-ref", "torch-sdpa"):  # the sdpa-* backends run torch-sdpa's
        return files, torch_version
    code = backend.implementations.get((variant_name, forward_phase))  # a plugin's own
    return files + ([Path(inspect.getsourcefile(code))] if code is not None else []), ""


@functools.cache
def _fingerprint(variant: str, backend: str, phase: str) -> str:
    files, version = _code_files(variant, backend, phase)
    digest = hashlib.sha256(version.encode())
    for path in dict.fromkeys(files):
        digest.update(
            str(path.relative_to(PACKAGE_ROOT) if path.is_relative_to(PACKAGE_ROOT) else path.name).encode()
        )
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def implementation_fingerprint(trial: Trial) -> str | None:
    """16 hex digits naming the code `trial` measures (cached per process: a run's code is fixed); None
    when there is no such code to read (an unknown variant or backend: the trial's row says so)."""
    try:
        return _fingerprint(trial.variant, trial.backend, trial.phase)
    except (KeyError, OSError, TypeError):
        return None
