"""What every kernel configuration the GPU sweeps launch compiles to on Hopper (sm_90), without a GPU.

For each case of `kernels.aot_cases` (the launches of prefill, backward, decode, MoBA and MoH at the
sweeps' head dims, dtypes, GQA groups and options), Triton compiles the launch exactly as its runtime
would and Triton's bundled ptxas builds the cubin; the table gives warps, stages, registers per
thread, stack frame and local loads/stores (spills), shared memory per block, and whether the
matrix products use wgmma. Exit 1 when any launch spills or needs more shared memory than an H100
block may have (227 KiB). `make test` checks a subset of these (tests/kernels/test_aot.py).

    .venv/bin/python benchmarks/kernel_resources.py                 # every case
    .venv/bin/python benchmarks/kernel_resources.py 'decode/*'      # some cases (fnmatch patterns)

Keeps the table and the rows in results/aot-sm<arch>/kernel_resources-triton<version>-<timestamp>.{md,json}.
Compiles into an empty Triton cache, so `compile s` is each launch's compile time on this machine's CPU.
"""

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Compiled, never interpreted; FP fusion on, as Triton <= 3.9 (and the GPU image's 3.6) default to.
# An empty kernel cache, so that every launch is compiled here and `compile s` is what a first call
# on a GPU host pays (Triton's cache would otherwise answer from an earlier run).
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="kernel-resources-")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402

from kernels.aot import compile_cases, format_table  # noqa: E402
from workloads.environment import code_version  # noqa: E402


def ptxas_version() -> str:
    out = subprocess.run([knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("patterns", nargs="*", default=["*"])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--out", type=Path, default=None, help="directory (default results/aot-sm<arch>/)")
    args = parser.parse_args()

    started = dt.datetime.now(dt.timezone.utc)
    rows = compile_cases(args.patterns, args.arch)
    failing = [r for r in rows if r.problems()]
    header = [
        f"# Kernel resources on sm_{args.arch}, compiled offline ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"triton {triton.__version__}, ptxas {ptxas_version()}, torch {torch.__version__}, "
        f"code {code_version()}.",
        f"`python benchmarks/kernel_resources.py {' '.join(args.patterns)}`: {len(rows)} launches, "
        f"{len(failing)} with a problem (spills, shared memory > 227 KiB).",
        "",
        "",
    ]
    table = "\n".join(header) + format_table(rows) + "\n"
    print(table)

    out_dir = args.out or ROOT / "benchmarks" / "results" / f"aot-sm{args.arch}"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"kernel_resources-triton{triton.__version__}-{started:%Y%m%d-%H%M%S}"
    (out_dir / f"{stem}.md").write_text(table)
    records = [{**dataclasses.asdict(r), "problems": r.problems()} for r in rows]
    (out_dir / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"kept {out_dir / stem}.{{md,json}}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
