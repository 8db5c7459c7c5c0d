"""Every kernel family compiles for Hopper (sm_90) without a GPU: no compile error, no register
spill, shared memory within an H100 block's 227 KiB (kernels.aot, on the launches the GPU sweeps
make). The compile runs in a subprocess because this session interprets Triton; the full table is
benchmarks/kernel_resources.py."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import FAMILIES
from kernels.aot_cases import CASES

ROOT = Path(__file__).resolve().parents[2]


def first_case_of_each_family() -> list[str]:
    """The first of each family's own cases ("<folder>/<case>", kernels/_families.py)."""
    first: dict[str, str] = {}
    for name in CASES:
        folder = name.split("/", 1)[0]
        if folder in FAMILIES:
            first.setdefault(folder, name)
    return list(first.values())


# One configuration per family and per feature a GPU sweep uses, chosen to fit the suite's time:
# the widest tiles (d256), MLA's unequal head dims, windows, Cog, GQA and MQA decode, MLA decode at
# 128 heads, both MoBA block sizes, MoH; then the first case of every family that keeps its own
# (AOT_CASES in its folder). benchmarks/kernel_resources.py compiles every case.
SUBSET = [
    "prefill/bf16/d128/causal",
    "prefill/bf16/d256/full",
    "prefill/bf16/mla-192-128/causal",
    "prefill/bf16/d128/window-sink",
    "prefill/bf16/d128/cog",
    "backward/bf16/d128/causal",
    "decode/bf16/d128/gqa",
    "decode/bf16/d128/window-sink",
    "decode/bf16/mla-576-512/h128",
    "moba/bf16/d128/block512",
    "moba/bf16/d128/block2048",
    "moh/bf16/d128",
    *first_case_of_each_family(),
]


def _compiled_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    return env


def _python(code_or_args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=ROOT,
        env=_compiled_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def compiled() -> dict[str, list[dict]]:
    """case name -> its launches' resources, from one `python -m kernels.aot --json` run."""
    result = _python(["-m", "kernels.aot", "--json", *SUBSET])
    assert result.returncode in (0, 1), result.stderr[-3000:]
    rows: dict[str, list[dict]] = {}
    for row in json.loads(result.stdout):
        rows.setdefault(row["case"], []).append(row)
    return rows


@pytest.mark.parametrize("case", SUBSET)
def test_compiles_for_sm90_without_spills_within_shared_memory(compiled, case):
    assert case in compiled, f"{case} did not compile"
    for row in compiled[case]:
        assert row["arch"] == 90
        assert row["registers"] > 0, row  # a real cubin was read
        assert row["stack_bytes"] == 0 and row["local_instructions"] == 0, (
            f"{case}/{row['kernel']} spills: {row}"
        )
        assert row["shared_bytes"] <= 232448, f"{case}/{row['kernel']} needs {row['shared_bytes']} B shared"
        assert row["problems"] == []


@functools.cache
def launches_of(case: str) -> tuple:
    """The case's launches, built here on meta tensors (nothing compiles or runs)."""
    return tuple(CASES[case]())


def test_every_kernel_is_compiled(compiled):
    """Every kernel that some case launches is in the subset the suite compiles."""
    launched = {launch.name for case in CASES for launch in launches_of(case)}
    assert {row["kernel"] for rows in compiled.values() for row in rows} == launched


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_kernel_family_has_an_aot_case(family):
    """A family no case launches would reach a GPU unchecked."""
    modules = {launch.kernel.fn.__module__ for case in CASES for launch in launches_of(case)}
    assert any(
        module.startswith(f"kernels.{family}.") or module == f"kernels.{family}" for module in modules
    ), (
        f"no case of kernels.aot launches a kernel of the family {family}: add AOT_CASES to "
        f"kernels/{family}/__init__.py (docs/adding-a-variant.md)"
    )


def test_tensor_core_prefill_uses_wgmma(compiled):
    """bf16 prefill on Hopper must run its products on warpgroup MMA, not on mma.sync."""
    assert all(row["wgmma"] for row in compiled["prefill/bf16/d128/causal"])


def test_the_check_catches_an_oversized_launch():
    """The same pipeline on a launch made too large on purpose (256×128 tiles of d256, 4 stages)
    reports the problem: the test above can fail."""
    code = """
import dataclasses, json
from kernels.aot import kernel_resources
from kernels.aot_cases import Shape, prefill
(launch,) = prefill(Shape(256, causal=False))
constexprs = {**launch.constexprs, "BLOCK_M": 256, "BLOCK_N": 128}
big = dataclasses.replace(launch, constexprs=constexprs, num_stages=4)
print(json.dumps(kernel_resources("oversized", big).problems()))
"""
    result = _python(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    problems = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("shared memory" in p or "spills" in p for p in problems), problems


@pytest.mark.parametrize(
    "args,env_interpret,message",
    [
        (["no-such-case"], None, "no case matches"),
        (["decode/*"], "1", "unset TRITON_INTERPRET"),
    ],
    ids=["unknown-case", "interpreted"],
)
def test_bad_use_exits_2_with_one_line(args, env_interpret, message):
    env = _compiled_env()
    if env_interpret:
        env["TRITON_INTERPRET"] = env_interpret
    result = subprocess.run(
        [sys.executable, "-m", "kernels.aot", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
