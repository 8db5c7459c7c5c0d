"""The worked example of docs/adding-a-variant.md, followed once: a test-only variant with its own
Triton kernel in three files and no edit anywhere else,

    tests/workloads/variants/sigmoid_kernels/sigmoid_attention/__init__.py   the kernel family
    tests/workloads/variants/sigmoid_variant.py                              the variant (a plugin)
    tests/workloads/variants/test_sigmoid_variant.py                         its tests (this file)

(a shipped variant adds its README row: four files). Shown here: the kernel against the variant's
reference math; the family discovered by `kernels` and compiled for sm_90 by `kernels.aot`; and the
variants_smoke sweep, which names `all`, planning the variant at its smoke parameters and running it
on every backend and phase. The last two run in subprocesses: discovery and plugins are read once,
when a process first imports `kernels` and the variant registry."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import FP32_REL_TOL, HALF_REL_TOL
from tests.workloads.variants.sigmoid_variant import windowed_sigmoid

ROOT = Path(__file__).resolve().parents[3]
FAMILY_FOLDER = Path(__file__).resolve().parent / "sigmoid_kernels"
PLUGIN = "tests.workloads.variants.sigmoid_variant"


def _load_family():
    """The family's module from its file, without registering it in `kernels` (this process's
    `kernels` was discovered without it)."""
    path = FAMILY_FOLDER / "sigmoid_attention" / "__init__.py"
    spec = importlib.util.spec_from_file_location("sigmoid_attention_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


family = _load_family()

# (batch, heads, kv_heads, seq_len, head_dim, window): odd lengths and head dims, GQA, a window that
# covers everything, one that cuts, and a window of one key (each query sees only itself).
SHAPES = [
    pytest.param(1, 2, 2, 37, 16, 1000, id="mha-n37-d16-whole"),
    pytest.param(2, 4, 2, 70, 24, 16, id="gqa-n70-d24-w16"),
    pytest.param(1, 3, 1, 33, 40, 1, id="mqa-n33-d40-w1"),
]
# fp16/bf16 (the weights are rounded to V's dtype before P·V), measured under the interpreter over
# SHAPES, 3 seeds: fp32 <= 1.1e-7, fp16 <= 3.1e-4, bf16 <= 6.4e-3 (the interpreter truncates to bf16
# where a GPU rounds to nearest): within the shipped forward kernels' tolerances (tests/kernels/cases.py).


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch,heads,kv_heads,seq_len,head_dim,window", SHAPES)
def test_kernel_matches_the_reference(batch, heads, kv_heads, seq_len, head_dim, window, dtype, device):
    generator = torch.Generator().manual_seed(0)
    q = random_tensor(batch, heads, seq_len, head_dim, dtype=dtype, device=device, generator=generator)
    k, v = (
        random_tensor(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device, generator=generator)
        for _ in range(2)
    )
    out = family.sigmoid_attention(q, k, v, window=window, bias=-1.0)
    ref = windowed_sigmoid(
        q.double(), k.double(), v.double(), torch.arange(seq_len, device=device), window, -1.0
    )
    tolerance = FP32_REL_TOL if dtype == torch.float32 else HALF_REL_TOL[dtype]
    assert_close(out.double(), ref, rel_tol=tolerance, name=f"sigmoid_attention {dtype}")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        pytest.param({"window": 0}, "window must be an int >= 1", id="window-0"),
        pytest.param({"window": 2.5}, "window must be an int >= 1", id="window-float"),
        pytest.param({"window": 4, "bias": math.inf}, "bias must be a finite float", id="bias-inf"),
    ],
)
def test_invalid_arguments_are_one_clear_error(kwargs, message):
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match=f"sigmoid_attention: {message}"):
        family.sigmoid_attention(q, q, q, **kwargs)


def _python(script: str, *args: str, interpret: bool) -> str:
    """Run `script` in a fresh interpreter at the repository root with the example's plugin; its
    stdout."""
    env = {**os.environ, "ATTNSWEEP_PLUGINS": PLUGIN}
    if not interpret:  # kernels.aot compiles for a GPU target: Triton must not be interpreted
        env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout


# In a fresh process: `kernels` with the example's folder on its search path, then variants_smoke
# planned (it names `all`) and the example's trials run as a sweep's workers run them.
RUN_IN_VARIANTS_SMOKE = """
import json, sys
from tests.kernels.extra_families import import_kernels_with
kernels = import_kernels_with(sys.argv[1])
from orchestrator.config import load_config
from orchestrator.planning import plan_trials
from workloads.measure import MeasureSettings
from workloads.runner import run_trial
plan = plan_trials(load_config(["sweep=variants_smoke"]).sweep)
rows = []
for trial in (t for t in plan.trials if t.variant == "test-sigmoid"):
    result = run_trial(trial, MeasureSettings(min_run_time_s=0.01))
    rows.append({"backend": trial.backend, "phase": trial.phase, "params": json.loads(trial.params),
                 "status": result.status, "rel_err": result.rel_err, "error": result.error})
print(json.dumps({"families": list(kernels.FAMILIES), "rows": rows}))
"""


def test_variants_smoke_plans_and_runs_the_example_on_every_backend_and_phase():
    stdout = _python(RUN_IN_VARIANTS_SMOKE, str(FAMILY_FOLDER), interpret=True)
    found = json.loads(stdout.strip().splitlines()[-1])
    assert "sigmoid_attention" in found["families"]
    statuses = {(row["backend"], row["phase"]): row["status"] for row in found["rows"]}
    offered = {
        ("torch-ref", "prefill"),
        ("torch-ref", "decode"),
        ("torch-ref", "train"),
        ("triton", "prefill"),
    }
    expected = {
        (backend, phase): "ok" if (backend, phase) in offered else "unsupported"
        for backend in ("torch-ref", "torch-sdpa", "triton")
        for phase in ("prefill", "decode", "train")
    }
    assert statuses == expected, [
        row for row in found["rows"] if row["status"] != expected.get((row["backend"], row["phase"]))
    ]
    # At the smoke parameters the variant file declares (window 16 of 40 tokens), the rest defaults.
    assert {json.dumps(row["params"], sort_keys=True) for row in found["rows"]} == {
        json.dumps({"bias": -1.0, "window": 16}, sort_keys=True)
    }
    assert all(row["rel_err"] < FP32_REL_TOL for row in found["rows"] if row["status"] == "ok")


COMPILE_FOR_SM90 = """
import sys
from tests.kernels.extra_families import import_kernels_with
import_kernels_with(sys.argv[1])
from kernels.aot import main
sys.exit(main(["--json", "sigmoid_attention/*"]))
"""


def test_kernels_aot_compiles_the_example_family_from_its_own_cases():
    (row,) = json.loads(_python(COMPILE_FOR_SM90, str(FAMILY_FOLDER), interpret=False))
    assert row["case"] == "sigmoid_attention/bf16/d128" and row["kernel"] == "_sigmoid_attention_fwd"
    assert row["registers"] > 0 and row["stack_bytes"] == 0 and row["problems"] == []
