"""Code-aware resume: a rerun measures again exactly the trials whose code changed (impl_hash), in a
copy of the checkout whose kernel files the test edits."""

import shutil
from pathlib import Path

import pyarrow.dataset as ds

from tests.helpers import run_attnsweep
from workloads.fingerprint import implementation_fingerprint
from workloads.trial import Trial

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analysis", "kernels", "orchestrator", "workloads")
SWEEP = [
    "sweep.variants=[mha]",
    "sweep.backends=[torch-sdpa,triton]",
    "sweep.phases=[prefill,decode]",
    "sweep.axes.seq_len=[24]",
    "sweep.axes.n_heads=[2]",
    "sweep.axes.head_dim=[16]",
    "measure.min_run_time_s=0.01",
    "executor=local",
    "tracking.enabled=false",
    "report=false",
    "progress=off",
]


def _run(checkout: Path) -> None:
    done = run_attnsweep(checkout, checkout, "run", *SWEEP)
    assert done.returncode == 0, done.stderr[-3000:]


def _measured_by_run(checkout: Path) -> list[set[tuple[str, str]]]:
    """(backend, phase) of the rows of each run, in the order the runs happened."""
    rows = ds.dataset(checkout / "results" / "smoke", format="parquet").to_table().to_pylist()
    runs = sorted({r["run_id"] for r in rows})
    return [{(r["backend"], r["phase"]) for r in rows if r["run_id"] == run} for run in runs]


def test_a_rerun_measures_again_exactly_the_trials_whose_kernel_changed(tmp_path):
    checkout = tmp_path / "checkout"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    _run(checkout)
    assert _measured_by_run(checkout) == [
        {("torch-sdpa", "prefill"), ("torch-sdpa", "decode"), ("triton", "prefill"), ("triton", "decode")}
    ]

    _run(checkout)  # nothing edited: nothing runs again
    assert len(_measured_by_run(checkout)) == 1

    kernel = checkout / "kernels" / "decode_attention" / "kernel.py"
    kernel.write_text(kernel.read_text() + "\n# an edit of the decode kernel\n")
    _run(checkout)
    assert _measured_by_run(checkout)[1:] == [{("triton", "decode")}]

    variant = checkout / "workloads" / "variants" / "gqa.py"  # mha's class: its reference and backends
    variant.write_text(variant.read_text() + "\n# an edit of the variant\n")
    _run(checkout)
    assert _measured_by_run(checkout)[2:] == [
        {("torch-sdpa", "prefill"), ("torch-sdpa", "decode"), ("triton", "prefill"), ("triton", "decode")}
    ]


def test_a_trial_of_unknown_code_has_no_fingerprint():
    """Its row is an error naming what is unknown; recording it must not fail the sweep."""
    assert (
        implementation_fingerprint(Trial("nope", "torch-sdpa", "prefill", 1, 8, 2, 2, 16, "float32", True))
        is None
    )
    assert (
        implementation_fingerprint(Trial("mha", "nope", "prefill", 1, 8, 2, 2, 16, "float32", True)) is None
    )
