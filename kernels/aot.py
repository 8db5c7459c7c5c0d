"""Ahead-of-time compile of the kernels for a GPU target, on a machine without a GPU.

Each kernel family decides its launches in one plain function (`forward_launch`,
`backward_launches`, `decode_launches`, `moba_launch`, `moh_launch`) that its public entry point
runs. Here the same functions are called on meta tensors (shapes and strides, no memory) at the
configurations the GPU sweeps use (`kernels.aot_cases`), and each `Launch` is compiled by Triton for
the target (default sm_90, an H100) exactly as the runtime would specialise it — same argument
types, same divisibility and value-1 specialisations, same constexprs, warps and stages — with
Triton's bundled ptxas. Nothing is launched. From the cubin come the facts a GPU would otherwise
reveal the hard way: registers per thread, local memory (spills), shared memory per block, and
whether the matrix products use Hopper's wgmma.

Must run with the kernels compiled, not interpreted: TRITON_INTERPRET unset before triton is
imported (`python -m kernels.aot` checks it).

    python -m kernels.aot                      # every case: a table, exit 1 if any breaks a limit
    python -m kernels.aot --json 'flash/*'     # the cases matching a pattern, as JSON
"""

import argparse
import dataclasses
import fnmatch
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from kernels._common import Launch, is_interpreted
from kernels.aot_cases import CASES

# Shared memory one block may use on sm_90 (H100/H200): 227 KiB (cudaDevAttrMaxSharedMemoryPerBlockOptin).
SM90_SHARED_MEMORY_BYTES = 232448
# Registers one thread may hold on every NVIDIA GPU since Kepler.
MAX_REGISTERS = 255


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """What the compiler made of one launch for the target."""

    case: str  # the configuration's name (kernels.aot_cases)
    kernel: str  # the Triton function
    arch: int  # e.g. 90
    num_warps: int
    num_stages: int
    registers: int  # per thread
    stack_bytes: int  # per-thread stack frame: spilled registers or local arrays
    local_instructions: int  # LDL/STL in the SASS: loads and stores of local memory (spills)
    shared_bytes: int  # dynamic shared memory per block (Triton's own count)
    wgmma: bool  # Hopper's warpgroup MMA (else mma.sync or FMA)
    compile_s: float

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0 or self.local_instructions > 0

    def problems(self, shared_limit: int = SM90_SHARED_MEMORY_BYTES) -> list[str]:
        """Why this launch would fail or crawl on the target: spills, too much shared memory."""
        found = []
        if self.spills:
            found.append(
                f"spills: {self.stack_bytes} B stack frame, {self.local_instructions} local loads/stores"
            )
        if self.shared_bytes > shared_limit:
            found.append(f"shared memory {self.shared_bytes} B > {shared_limit} B")
        if self.registers > MAX_REGISTERS:
            found.append(f"{self.registers} registers > {MAX_REGISTERS}")
        return found


def _require_compiled() -> None:
    if is_interpreted():
        raise RuntimeError(
            "kernels.aot compiles for a GPU target: unset TRITON_INTERPRET before triton is imported"
        )


def compile_launch(launch: Launch, arch: int = 90):
    """Triton's CompiledKernel of `launch` for cuda sm_<arch>, specialised as the runtime would
    specialise the same call (Triton's own argument binder), without a device."""
    _require_compiled()
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kernel = launch.kernel
    options = {**launch.constexprs, "num_warps": launch.num_warps, "num_stages": launch.num_stages}
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, parsed = binder(*launch.args, **options)
    parsed, signature, constexprs, attrs = kernel._pack_args(
        backend, options, bound_args, specialization, parsed
    )
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=parsed.__dict__)


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        return subprocess.run(
            [knobs.nvidia.cuobjdump.path, *flags, file.name], capture_output=True, text=True, check=True
        ).stdout


def kernel_resources(case: str, launch: Launch, arch: int = 90) -> KernelResources:
    start = time.perf_counter()
    compiled = compile_launch(launch, arch)
    compile_s = time.perf_counter() - start
    cubin = compiled.asm["cubin"]
    usage = _cuobjdump(cubin, "--dump-resource-usage")
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    sass = _cuobjdump(cubin, "--dump-sass")
    local = len(re.findall(r"\b(?:LDL|STL)\b", sass))
    return KernelResources(
        case=case,
        kernel=launch.name,
        arch=arch,
        num_warps=launch.num_warps,
        num_stages=launch.num_stages,
        registers=registers,
        stack_bytes=stack,
        local_instructions=local,
        shared_bytes=int(compiled.metadata.shared),
        wgmma="wgmma.mma_async" in compiled.asm["ptx"],
        compile_s=round(compile_s, 2),
    )


def compile_cases(patterns: Iterable[str] = ("*",), arch: int = 90) -> list[KernelResources]:
    """Compile every launch of the cases whose name matches one of `patterns` (fnmatch)."""
    _require_compiled()
    patterns = list(patterns)
    names = [name for name in CASES if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if not names:
        raise ValueError(f"no case matches {patterns} (known: {', '.join(CASES)})")
    return [kernel_resources(name, launch, arch) for name in names for launch in CASES[name]()]


def format_table(rows: list[KernelResources]) -> str:
    """Markdown table, one row per compiled launch."""
    columns = ["case", "kernel", "warps", "stages", "registers", "stack B", "local ld/st", "shared KiB"]
    columns += ["wgmma", "compile s", "problems"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        problems = r.problems()
        lines.append(
            f"| {r.case} | {r.kernel} | {r.num_warps} | {r.num_stages} | {r.registers} | {r.stack_bytes} "
            f"| {r.local_instructions} | {r.shared_bytes / 1024:.1f} | {'yes' if r.wgmma else 'no'} "
            f"| {r.compile_s:.1f} | {'; '.join(problems) or 'ok'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.aot", description=__doc__.split("\n")[0])
    parser.add_argument("patterns", nargs="*", default=["*"], help="case names or fnmatch patterns")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    try:
        rows = compile_cases(args.patterns, args.arch)
    except (ValueError, RuntimeError) as exc:
        print(f"kernels.aot: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "problems": r.problems()} for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 1 if any(r.problems() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
