"""Invalid sweeps exit 2 with one line naming the key and value at fault, and write nothing."""

import socket
import subprocess
import sys

import pytest

from orchestrator.cli import main

INVALID = [
    pytest.param(
        ["sweep.variants=[gqa]", "sweep.axes.n_heads=[6]", "sweep.axes.n_kv_heads=[4]"],
        "sweep.axes.n_kv_heads: no valid point for variant gqa (n_heads=6 is not divisible by n_kv_heads=4)",
        id="gqa-indivisible-heads",
    ),
    pytest.param(
        ["sweep=nope"],
        "sweep=nope: no such sweep (available: gpu_table, gqa_heads, kv_cache, moba_long, moh_heads, smoke, ",
        id="unknown-sweep",
    ),
    pytest.param(
        ["sweep.variants=[mha,mla2]"], "sweep.variants: unknown variant 'mla2'", id="unknown-variant"
    ),
    pytest.param(
        ["sweep.axes.seq_len=[128,0]"], "sweep.axes.seq_len: 0 is not a positive integer", id="seq-len-zero"
    ),
    pytest.param(
        ["sweep.axes.seq_len=[-5]"], "sweep.axes.seq_len: -5 is not a positive integer", id="seq-len-negative"
    ),
    pytest.param(
        ["sweep.axes.dtype=[bfloat61]"], "sweep.axes.dtype: unknown dtype 'bfloat61'", id="dtype-typo"
    ),
    pytest.param(["sweep.axes.seqlen=[128]"], "sweep.axes.seqlen: unknown key", id="unknown-axis"),
    pytest.param(["foo=1"], "foo: unknown key", id="unknown-key"),
    pytest.param(["+tracking.token=abc"], "tracking.token: unknown key", id="added-unknown-key"),
    pytest.param(["sweep.axes.seq_len=[abc]"], "sweep.axes.seq_len[0]: Value 'abc'", id="wrong-type"),
    pytest.param(["sweep.axes.seq_len=[512,"], "sweep.axes.seq_len=[512,: cannot parse", id="parse-error"),
    pytest.param(
        ["sweep.params.gqa.window=4"],
        "sweep.params.gqa.window: unknown parameter of gqa",
        id="unknown-variant-param",
    ),
    pytest.param(
        ["sweep.params.mla.latent_dim=0"],
        "sweep.params.mla.latent_dim: 0 must be at least 1",
        id="bad-param-value",
    ),
    pytest.param(
        ["sweep.params.moba.top_k=[2,abc]"],
        "sweep.params.moba.top_k: 'abc' is not a int",
        id="bad-param-type",
    ),
    pytest.param(["sweep.backends=[cudnn]"], "sweep.backends: unknown backend 'cudnn'", id="unknown-backend"),
    pytest.param(["sweep.phases=[backward]"], "sweep.phases: unknown phase 'backward'", id="unknown-phase"),
    pytest.param(
        ["sweep.name=../escape"], "sweep.name: '../escape' is not a plain name", id="path-like-name"
    ),
    pytest.param(["executor=slurm"], "executor: 'slurm' is not one of ray, local", id="unknown-executor"),
]


@pytest.mark.parametrize("overrides,message", INVALID)
def test_invalid_sweep_exits_2_and_writes_nothing(overrides, message, in_tmp, capsys):
    assert main(["run", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert err.startswith(f"attnsweep: error: {message}")
    assert list(in_tmp.iterdir()) == []


def test_console_script_exit_code(in_tmp):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "sweep.axes.dtype=[fp32]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "attnsweep: error: sweep.axes.dtype: unknown dtype 'fp32' (known: bfloat16, float16, float32)"
    ]
    assert list(in_tmp.iterdir()) == []


def test_invalid_config_fails_before_any_service_starts(in_tmp):
    """Validation comes first: neither Ray nor MLflow (nor Triton) is even imported."""
    code = (
        "import sys; from orchestrator.cli import main; "
        "assert main(['run', 'sweep.axes.seq_len=[0]']) == 2; "
        "print(sorted(m for m in ('ray', 'mlflow', 'triton') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_report_of_missing_dataset_exits_2(in_tmp, capsys):
    assert main(["report", "results/none"]) == 2
    assert "RESULTS=results/none: no results dataset there" in capsys.readouterr().err


def test_unreachable_ray_exits_1_and_writes_nothing(in_tmp, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["run", f"ray.address=127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"attnsweep: error: ray.address=127.0.0.1:{port}: nothing answers")
        and err.count("\n") == 1
    )
    assert list(in_tmp.iterdir()) == []
