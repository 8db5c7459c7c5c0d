"""benchmarks/gpu_check.sh on the CPU: the whole check with --cpu-smoke, and a stage that overruns its
time box (interrupted, its rows kept, the next stages run all the same)."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
FILES = {
    "environment.md",
    "kernel_tests.xml",
    "kernel_tests.md",
    "gpu_table.parquet",
    "variants_smoke.parquet",
    "tables.md",
    "summary.md",
    "gpu_check.log",
}


def _helper():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(out: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    environ.pop("ATTNSWEEP_PLUGINS", None)  # conftest's test-only variant: not part of these sweeps
    environ.update(
        PYTHON=sys.executable,
        GPU_CHECK_WORKERS="1",
        GPU_CHECK_SITE=str(out.parent / "site"),  # used only if hydra were not importable
        ATTNSWEEP_CODE_VERSION="test-gpu-check",
        **env,
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *args, str(out)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stage_table(out: Path) -> dict[str, list[str]]:
    """summary.md's stage table: stage -> [status, seconds, until s, note]."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("setup", "kernels", "table", "smoke", "report"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage_and_leaves_at_most_8_files(tmp_path):
    out = tmp_path / "out"
    result = run_check(out, "--cpu-smoke")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]

    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)
    assert {f.name for f in files} == FILES
    assert all(f.stat().st_size < 16 * 2**20 for f in files)

    env = (out / "environment.md").read_text()
    assert "test-gpu-check" in env and "Measured ceilings" in env and "nvidia-smi" in env

    table = pd.read_parquet(out / "gpu_table.parquet")
    assert set(table["backend"]) == {"triton", "torch-sdpa"}
    assert (table["status"] == "ok").all(), table[["variant", "backend", "phase", "error"]]
    assert table["code_version"].eq("test-gpu-check").all()
    # causal and non-causal prefill, decode once (causal by construction): 3 variants x 2 backends x 2 N
    assert len(table) == 36 and table["trial_id"].is_unique
    assert set(map(tuple, table[["phase", "causal"]].drop_duplicates().values)) == {
        ("prefill", True),
        ("prefill", False),
        ("decode", True),
    }

    smoke = pd.read_parquet(out / "variants_smoke.parquet")
    measured = smoke[smoke["backend"].isin(["triton", "torch-sdpa"])]
    assert set(measured["status"]) <= {"ok", "unsupported"}, measured[["variant", "backend", "error"]]
    assert measured.groupby("backend")["status"].apply(lambda s: s.eq("ok").any()).all()

    stages = stage_table(out)
    assert all(row[0] == "ok" for row in stages.values()), stages
    assert stages["kernels"][3].endswith("0 failed, 0 skipped") and "passed" in stages["kernels"][3]
    assert "0 failed" in (out / "kernel_tests.md").read_text()
    tables = (out / "tables.md").read_text()
    assert "prefill non-causal" in tables and "triton/sdpa time" in tables
    assert "attnsweep report: gpu_table" in tables
    # The stage table is the end of what the caller sees.
    tail = result.stdout[-3000:]
    assert "| table | ok |" in tail and tail.rstrip().endswith("every stage ok, exit 0")


@pytest.mark.slow
def test_a_stage_past_its_box_is_interrupted_its_rows_kept_and_the_next_stages_run(tmp_path):
    out = tmp_path / "out"
    budget = 45
    start = time.monotonic()
    result = run_check(
        out,
        GPU_CHECK_STAGES="table,smoke,report",
        GPU_CHECK_BUDGET_TABLE=str(budget),
        GPU_CHECK_GRACE_S="8",
        # 18 SDPA trials of at least 3 s each (the CPU timer's budget): about a minute, past the box.
        GPU_CHECK_TABLE="sweep.backends=[torch-sdpa] sweep.axes.seq_len=[256,512] sweep.axes.batch=[1] "
        "sweep.axes.n_heads=[2] sweep.axes.n_kv_heads=[1] sweep.axes.head_dim=[16] "
        "sweep.axes.dtype=[float32] measure.min_run_time_s=3",
        GPU_CHECK_SMOKE="sweep.variants=[mha] sweep.backends=[torch-sdpa] sweep.phases=[decode] "
        "measure.min_run_time_s=0.01",
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stdout[-6000:] + result.stderr[-3000:]

    stages = stage_table(out)
    assert stages["table"][0] == "timeout", stages
    assert int(stages["table"][1]) <= budget + 3
    assert stages["smoke"][0] == "ok" and stages["report"][0] == "ok", stages
    assert stages["setup"][0] == "not run" and stages["kernels"][0] == "not run"

    rows = pd.read_parquet(out / "gpu_table.parquet")  # what was measured before the interrupt
    assert 1 <= len(rows) < 18 and (rows["status"] == "ok").all()
    assert re.search(rf"{len(rows)} rows: {len(rows)} ok", stages["table"][3])
    smoke = pd.read_parquet(out / "variants_smoke.parquet")
    assert list(smoke["status"]) == ["ok"]
    assert "a stage failed or ran out of time, exit 1" in result.stdout[-500:]
    assert elapsed < budget + 90


def _without(tmp_path: Path, *packages: str) -> str:
    """A PYTHONPATH entry whose `packages` raise ImportError: a host that lacks them (the GPU host)."""
    stubs = tmp_path / "stubs"
    for name in packages:
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return str(stubs)


@pytest.mark.slow
def test_without_hydra_or_wheelhouse_setup_fails_in_one_line_and_the_sweeps_are_skipped(tmp_path):
    out = tmp_path / "out"
    result = run_check(
        out,
        "--cpu-smoke",
        PYTHONPATH=_without(tmp_path, "hydra", "omegaconf", "ray", "mlflow"),
        GPU_CHECK_WHEELS=str(tmp_path / "no-wheels"),
        GPU_CHECK_STAGES="setup,table,report",
    )
    assert result.returncode == 1, result.stdout[-4000:]
    assert "has no wheels: run 'make wheelhouse'" in result.stdout
    stages = stage_table(out)
    assert stages["setup"][0] == "failed" and stages["table"][0] == "skipped", stages
    assert stages["report"][0] == "ok" and (out / "environment.md").exists()


@pytest.mark.slow
def test_hydra_installs_from_the_wheelhouse_on_a_host_without_it(tmp_path):
    """The GPU host's case: no hydra, omegaconf, ray or mlflow. Hydra's wheels from `make wheelhouse`
    (.whl/, git-ignored: skipped without it) go to GPU_CHECK_SITE and the sweep runs with them."""
    wheels = ROOT / ".whl"
    names = {p.name.split("-")[0] for p in wheels.glob("*.whl")}
    if not {"hydra_core", "omegaconf", "antlr4_python3_runtime"} <= names:
        pytest.skip("no wheelhouse: `make wheelhouse` puts Hydra's wheels in .whl/")
    out = tmp_path / "out"
    result = run_check(
        out,
        "--cpu-smoke",
        PYTHONPATH=_without(tmp_path, "hydra", "omegaconf", "ray", "mlflow"),
        GPU_CHECK_WHEELS=str(wheels),
        GPU_CHECK_STAGES="setup,table",
        GPU_CHECK_TABLE="sweep.variants=[gqa] sweep.backends=[torch-sdpa] sweep.axes.seq_len=[32] "
        "sweep.axes.batch=[1] sweep.axes.n_heads=[2] sweep.axes.n_kv_heads=[1] sweep.axes.head_dim=[16] "
        "sweep.axes.dtype=[float32] measure.min_run_time_s=0.01",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (tmp_path / "site" / "hydra").is_dir()
    assert stage_table(out)["setup"][3].startswith("hydra-core installed from .whl/")
    assert set(pd.read_parquet(out / "gpu_table.parquet")["status"]) == {"ok"}


def test_usage_errors_exit_2_and_write_nothing(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "GPU_CHECK_STAGES": "setup,bench"},
    )
    assert result.returncode == 2 and "unknown stage 'bench'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_overrides_from_the_command_line_win(tmp_path):
    last_wins = _helper().last_wins
    given = ["sweep=gpu_table", "measure.rep_ms=20", "sweep.axes.seq_len=[64]", "measure.rep_ms=50"]
    assert last_wins(given) == ["sweep=gpu_table", "sweep.axes.seq_len=[64]", "measure.rep_ms=50"]


def test_kernel_test_summary_from_junit_xml(tmp_path):
    (tmp_path / "kernel_tests.xml").write_text(
        """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1"
        failures="1" skipped="1" tests="4" time="12.5">
        <testcase classname="tests.kernels.test_a" name="test_ok[x]" time="0.1"/>
        <testcase classname="tests.kernels.test_a" name="test_bad[y]" time="0.2"><failure
          message="AssertionError: rel_err 1e-1">def test_bad():
E   AssertionError: output: rel_err 1.0e-01 &gt;= 1.0e-02</failure></testcase>
        <testcase classname="tests.kernels.test_a" name="test_gpu" time="0"><skipped
          message="needs a CUDA GPU"/></testcase>
        <testcase classname="" name="tests.kernels.test_b" time="0"><error message="collection failure">
E   ImportError: cannot import name 'x'</error></testcase>
        </testsuite></testsuites>"""
    )
    md, stdout, note, failed = _helper().kernel_tests(tmp_path)
    assert failed and note == "1 passed, 2 failed, 1 skipped"
    text = "\n".join(md)
    assert "`tests/kernels/test_a.py::test_bad[y]` | failure | AssertionError: output: rel_err" in text
    assert "`tests/kernels/test_b.py` | error | ImportError: cannot import name 'x'" in text
    assert "| needs a CUDA GPU | 1 |" in text
    assert stdout[0] == "kernel tests: 1 passed, 2 failed, 1 skipped" and len(stdout) == 3
