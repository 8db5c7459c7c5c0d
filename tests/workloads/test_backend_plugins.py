"""Backends of your own through ATTNSWEEP_PLUGINS: a test-only backend runs in a real sweep, and a
plugin that fails to load or defines a malformed backend stops the sweep before anything runs."""

import subprocess
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.helpers import run_attnsweep

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "tests.workloads.example_backend"


def _attnsweep(cwd: Path, plugins: str, *overrides: str) -> subprocess.CompletedProcess:
    return run_attnsweep(cwd, ROOT, "run", *overrides, plugins=plugins)


def test_a_plugin_backend_runs_in_a_sweep_and_is_checked_against_the_reference(tmp_path):
    done = _attnsweep(
        tmp_path,
        EXAMPLE,
        "sweep.variants=[mha,gqa,streaming]",
        "sweep.backends=[torch-ref,example-bnhd]",
        "sweep.phases=[prefill,decode,train]",
        "sweep.axes.seq_len=[24]",
        "sweep.axes.n_heads=[4]",
        "sweep.axes.n_kv_heads=[2]",
        "sweep.axes.head_dim=[16]",
        "sweep.params.streaming.sink=2",
        "sweep.params.streaming.window=6",
        "measure.min_run_time_s=0.01",
        "executor=local",
        "tracking.enabled=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = ds.dataset(tmp_path / "results" / "smoke", format="parquet").to_table().to_pylist()
    plugin = {(r["variant"], r["phase"]): r for r in rows if r["backend"] == "example-bnhd"}
    assert sorted(plugin) == sorted(
        (v, p) for v in ("mha", "gqa", "streaming") for p in ("prefill", "decode", "train")
    )
    for (variant, _), row in plugin.items():
        if variant == "streaming":  # the plugin offers MHA/GQA/MQA only
            assert (
                row["status"] == "unsupported"
                and "streaming has no example-bnhd implementation" in row["error"]
            )
        else:
            assert row["status"] == "ok", row["error"]
            assert row["rel_err"] < 1e-5 and row["kernels"], row


@pytest.mark.parametrize(
    "plugins,message",
    [
        pytest.param(
            "tests.workloads.no_such_module",
            "ATTNSWEEP_PLUGINS: module 'tests.workloads.no_such_module': No module named",
            id="import-fails",
        ),
        pytest.param(
            "tests.workloads.malformed_backend",
            "ATTNSWEEP_PLUGINS: module 'tests.workloads.malformed_backend': backend name 'mine/fast'",
            id="malformed-backend",
        ),
    ],
)
def test_a_failing_plugin_exits_2_with_one_line_before_anything_runs(tmp_path, plugins, message):
    done = _attnsweep(tmp_path, plugins, "executor=local", "tracking.enabled=false")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"attnsweep: error: {message}"), done.stderr
    assert list(tmp_path.iterdir()) == []
