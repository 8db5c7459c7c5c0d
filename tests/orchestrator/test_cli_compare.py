"""`attnsweep compare` through the CLI: exit codes, one-line errors, the files it writes, two real sweeps."""

import re

import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.store import read_results
from orchestrator.cli import main
from tests.analysis.test_compare import HUGE_SPREAD, SPREAD, is_triton, measure, sweep_points, write_dataset

SCENARIOS = {
    # id: (NEW's latency as a multiple of BASE's, p20/p80 of both sides, expected exit code)
    "triton-20pct-slower": (lambda t: 1.2 if is_triton(t) else 1.0, SPREAD, 3),
    "everything-1pct-slower": (lambda t: 1.01, SPREAD, 0),
    "triton-20pct-slower-in-a-huge-spread": (lambda t: 1.2 if is_triton(t) else 1.0, HUGE_SPREAD, 0),
    "triton-30pct-faster": (lambda t: 0.7 if is_triton(t) else 1.0, SPREAD, 0),
}


@pytest.fixture
def datasets(in_tmp):
    """Build BASE and NEW under the test's working directory: `base/smoke` and `new/smoke`."""

    def build(scale=lambda t: 1.0, spread=SPREAD, new_seq_lens=(100, 384, 1000)):
        base = write_dataset(in_tmp / "base", measure(sweep_points(), "run-base", spread=spread))
        new_rows = measure(sweep_points(new_seq_lens), "run-new", scale=scale, spread=spread, noise=0.01)
        return base.relative_to(in_tmp), write_dataset(in_tmp / "new", new_rows).relative_to(in_tmp)

    return build


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_exit_code_flags_only_a_slowdown_beyond_threshold_and_spread(datasets, in_tmp, capsys, scenario):
    scale, spread, expected = SCENARIOS[scenario]
    base, new = datasets(scale, spread)
    code = main(["compare", str(base), str(new)])
    out = capsys.readouterr()
    assert code == expected, out.out
    assert out.err == ""
    assert "54 matched points, 54 with a ratio" in out.out
    if expected == 3:
        assert "REGRESSION: 18 point(s) flagged, by backend: triton (18)" in out.out
        assert re.search(r"regression: mha triton prefill B=2 N=1000 .*: \+2\d\.\d%", out.out)
    else:
        assert "no regression" in out.out and "torch" not in out.out.split("no regression")[1]
    reports = in_tmp / "reports" / "compare-smoke-vs-smoke"
    assert {p.name for p in reports.iterdir()} == {"index.html", "summary.md"}
    assert f"comparison: {reports.relative_to(in_tmp) / 'index.html'}" in out.out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere/smoke", "{new}"], "BASE=nowhere/smoke: no results dataset at nowhere/smoke"),
        (["{base}", "{new}@run-missing"], "no such run (runs there: run-new)"),
        (["{base}", "empty"], "NEW=empty: no result rows there"),
        (["{base}", "{other}"], "no point in common"),
        (
            ["{base}", "{new}", "--metric", "tflops"],
            "--metric=tflops: unknown metric (known: latency_ms, compile_ms)",
        ),
        (["{base}", "{new}", "--threshold", "-0.1"], "--threshold=-0.1: expected a fraction >= 0"),
        (["{base}", "{new}", "--threshold", "five"], "--threshold=five: expected a fraction >= 0"),
        (["{base}", "{new}", "--out", "{base}/cmp"], "inside the BASE dataset"),
    ],
    ids=[
        "missing-dir",
        "missing-run",
        "empty-dir",
        "no-common-point",
        "unknown-metric",
        "negative-threshold",
        "word-threshold",
        "out-inside-base",
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(datasets, in_tmp, capsys, args, message):
    base, new = datasets(new_seq_lens=(100, 384))
    other = write_dataset(in_tmp / "other", measure(sweep_points((128,)), "run-other"))
    (in_tmp / "empty").mkdir()
    before = sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*"))
    names = dict(base=base, new=new, other=other.relative_to(in_tmp))
    code = main(["compare", *(a.format(**names) for a in args)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("attnsweep: error: ") and message in err, err
    assert sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*")) == before


def test_run_id_selects_one_run_of_a_dataset(datasets, in_tmp, capsys):
    base, _ = datasets()
    later = measure(sweep_points(), "run-later", scale=lambda t: 1.2 if is_triton(t) else 1.0)
    write_dataset(in_tmp / "base", [r | {"timestamp": r["timestamp"].replace(day=2)} for r in later])
    code = main(["compare", f"{base}@run-base", f"{base}@run-later", "--out", "cmp"])
    out = capsys.readouterr().out
    assert code == 3 and "triton (18)" in out
    assert (in_tmp / "cmp" / "index.html").exists()
    assert main(["compare", str(base), f"{base}@run-later", "--out", "cmp"]) == 0  # latest rows: run-later's


TINY_SWEEP = [
    "sweep.variants=[mqa]",
    "sweep.backends=[torch-ref,torch-sdpa,triton]",
    "sweep.phases=[prefill]",
    "sweep.axes.seq_len=[24,40]",
    "measure.min_run_time_s=0.02",
    "executor=local",
    "tracking.enabled=false",
    "report=false",
    "progress=off",
]


@pytest.mark.slow
def test_two_real_sweeps_compare_point_by_point(in_tmp, capsys):
    """Two real runs of one tiny sweep: the exit code (0 or 3) depends on the machine's timing
    noise, so only the structure is checked."""
    for results_dir in ("base", "new"):
        assert main(["run", *TINY_SWEEP, f"results_dir={results_dir}"]) == 0
    capsys.readouterr()
    code = main(["compare", "base/smoke", "new/smoke", "--out", "cmp"])
    out = capsys.readouterr().out
    assert code in (0, 3), out
    interpreted = read_results(in_tmp / "base" / "smoke")["interpreted"].sum()
    assert (
        f"6 matched points, {6 - interpreted} with a ratio ({interpreted} interpreted Triton left out)" in out
    )
    assert "0 only in BASE, 0 only in NEW" in out
    markdown = (in_tmp / "cmp" / "summary.md").read_text()
    for backend in ("torch-ref", "torch-sdpa", "triton"):
        assert f"| prefill | mqa | {backend} |" in markdown
    assert (in_tmp / "cmp" / "index.html").stat().st_size > 0
