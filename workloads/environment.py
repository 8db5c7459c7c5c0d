"""Facts about the machine a trial runs on and the code it runs, recorded in every result row."""

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from workloads.backends import triton_version


@functools.cache
def device_name(device_type: str) -> str:
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


@functools.cache
def driver_version() -> str:
    if not torch.cuda.is_available():
        return ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return f"cuda {torch.version.cuda}"


def environment_fields(device_type: str) -> dict[str, str]:
    """The environment columns of a result row (node is filled in by the Ray worker)."""
    return {
        "device": device_name(device_type),
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "triton_version": triton_version(),
        "driver_version": driver_version(),
    }


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


CODE_VERSION_ENV = "ATTNSWEEP_CODE_VERSION"
# What a result row records when neither git nor CODE_VERSION_ENV says: the reader learns why, and how
# to record the version next time.
UNKNOWN_CODE_VERSION = f"unknown (no git checkout; set {CODE_VERSION_ENV})"


@functools.cache
def code_version(repo: str | None = None) -> str:
    """`git describe`-like id of the code: commit, plus '+dirty' when the tree has changes. A sweep
    submitted to a cluster runs from a copy without .git: `attnsweep submit` passes the submitter's
    version in CODE_VERSION_ENV (a copy made by hand can set it too); else UNKNOWN_CODE_VERSION."""
    if repo is None and os.environ.get(CODE_VERSION_ENV):
        return os.environ[CODE_VERSION_ENV]
    cwd = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        commit = _git(cwd, "rev-parse", "--short=12", "HEAD")
        dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_CODE_VERSION
    return commit + ("+dirty" if dirty else "")
