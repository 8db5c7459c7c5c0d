"""compare_frames and write_comparison on pairs of schema-valid datasets written through the real store.

BASE is a small GPU sweep (mha/gqa/mqa × three backends × prefill/decode × seq_len 100, 384, 1000)
with do_bench-like spreads (p20 = 0.97, p80 = 1.04 × the median); NEW is the same sweep measured again,
with ±1% noise and whatever change a test plants.
"""

import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.compare import (
    IMPROVEMENT,
    INTERPRETED,
    NOT_OK,
    NOW_FAILING,
    REGRESSION,
    WITHIN_SPREAD,
    WITHIN_THRESHOLD,
    CompareError,
    compare_frames,
    verdict,
)
from analysis.compare_report import summary_text, write_comparison
from analysis.schema import COLUMNS
from analysis.store import ResultStore, read_results
from workloads.trial import Trial

VARIANTS = {"mha": 8, "gqa": 2, "mqa": 1}  # variant -> n_kv_heads, n_heads = 8
BACKENDS = ("torch-ref", "torch-sdpa", "triton")
SEQ_LENS = (100, 384, 1000)
SPREAD = (0.97, 1.04)  # p20 and p80 as multiples of the median
HUGE_SPREAD = (0.5, 2.0)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def sweep_points(seq_lens=SEQ_LENS) -> list[Trial]:
    return [
        Trial(variant, backend, phase, 2, seq_len, 8, n_kv, 64, "float16", True)
        for variant, n_kv in VARIANTS.items()
        for backend in BACKENDS
        for phase in ("prefill", "decode")
        for seq_len in seq_lens
    ]


def base_latency(trial: Trial) -> float:
    """A toy cost model: what matters is that points differ."""
    speed = {"torch-ref": 3.0, "torch-sdpa": 1.0, "triton": 0.8}[trial.backend] * (1 + trial.n_kv_heads / 8)
    work = 2e-5 * trial.seq_len**1.6 if trial.phase == "prefill" else 1e-4 * trial.seq_len
    return speed * work + 0.01


def result_row(
    trial: Trial,
    run_id: str,
    when: datetime,
    latency_ms: float | None,
    *,
    spread=SPREAD,
    status: str = "ok",
    interpreted: bool = False,
    code_version: str = "4f2c9e1",
    error: str | None = None,
) -> dict:
    """One row with every schema column; timing columns only for ok rows."""
    row = {c: None for c in COLUMNS}
    row.update(
        trial.columns(),
        sweep="smoke",
        run_id=run_id,
        trial_id=trial.trial_id,
        attempt=1,
        status=status,
        error=error,
        device="cpu" if interpreted else "NVIDIA H100 80GB HBM3",
        host="gpu-node-07",
        node="",
        interpreted=interpreted,
        code_version=code_version,
        timestamp=when,
    )
    if status == "ok":
        row.update(
            latency_ms=latency_ms,
            latency_ms_p20=latency_ms * spread[0],
            latency_ms_p80=latency_ms * spread[1],
            n_samples=100,
        )
    return row


def measure(trials, run_id, *, scale=lambda t: 1.0, noise=0.0, start=T0, **kwargs) -> list[dict]:
    """Rows for every trial: base latency × scale(trial) × a deterministic ±noise pattern."""
    return [
        result_row(
            t,
            run_id,
            start + timedelta(seconds=i),
            base_latency(t) * scale(t) * (1 + noise * (i % 3 - 1)),
            **kwargs,
        )
        for i, t in enumerate(trials)
    ]


def write_dataset(root: Path, *runs: list[dict]) -> Path:
    """Each list of rows becomes one run of `<root>/smoke`, written as the sweep driver writes it."""
    for rows in runs:
        store = ResultStore(root, "smoke", rows[0]["run_id"])
        store.append(rows)
        store.finalize()
    return root / "smoke"


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def is_triton(trial: Trial) -> bool:
    return trial.backend == "triton"


def compare(base_rows, new_rows, **kwargs):
    return compare_frames(frame(base_rows), frame(new_rows), **kwargs)


@pytest.mark.parametrize(
    "base, new, threshold, expected",
    [
        ((1.0, 0.97, 1.04), (1.2, 1.164, 1.248), 0.05, REGRESSION),
        ((1.0, 0.5, 2.0), (1.2, 0.6, 2.4), 0.05, WITHIN_SPREAD),
        ((1.0, 0.9, 1.1), (1.2, 1.1, 1.3), 0.05, WITHIN_SPREAD),
        ((1.0, 0.995, 1.005), (1.03, 1.025, 1.035), 0.05, WITHIN_THRESHOLD),
        ((1.0, 0.995, 1.005), (1.03, 1.025, 1.035), 0.0, REGRESSION),
        ((1.0, 0.99, 1.01), (1.06, 1.05, 1.07), 0.10, WITHIN_THRESHOLD),
        ((1.2, 1.164, 1.248), (1.0, 0.97, 1.04), 0.05, IMPROVEMENT),
        ((1.2, 0.6, 2.4), (1.0, 0.5, 2.0), 0.05, WITHIN_SPREAD),
        ((1.0, 1.0, 1.0), (1.2, 1.2, 1.2), 0.05, REGRESSION),
    ],
    ids=[
        "20pct-slower-ranges-apart",
        "20pct-slower-ranges-overlap",
        "20pct-slower-ranges-touch",
        "3pct-slower-ranges-apart-below-threshold",
        "3pct-slower-ranges-apart-threshold-0",
        "6pct-slower-threshold-10pct",
        "20pct-faster-ranges-apart",
        "20pct-faster-ranges-overlap",
        "20pct-slower-no-spread",
    ],
)
def test_regression_rule_needs_both_threshold_and_spread(base, new, threshold, expected):
    assert verdict(*base, *new, threshold) == expected


def test_planted_slowdown_of_one_backend_is_flagged_and_named():
    trials = sweep_points()
    c = compare(
        measure(trials, "base"),
        measure(trials, "new", scale=lambda t: 1.2 if is_triton(t) else 1.0, noise=0.01),
    )
    flagged = c.flagged
    assert len(flagged) == 3 * 2 * 3 and set(flagged["backend"]) == {"triton"}
    assert set(flagged["verdict"]) == {REGRESSION}
    assert set(c.points.loc[c.points["backend"] != "triton", "verdict"]) == {WITHIN_THRESHOLD}
    groups = c.groups.set_index("backend")
    assert groups.loc["triton", "geomean"].between(1.18, 1.22).all()
    assert groups.loc["torch-sdpa", "geomean"].between(0.99, 1.01).all()
    assert (groups.loc["triton", "flagged"] == 3).all() and (groups.loc["torch-ref", "flagged"] == 0).all()
    assert c.groups["backend"].iloc[0] == "triton"  # flagged groups come first


def test_one_percent_change_is_not_flagged():
    trials = sweep_points()
    c = compare(measure(trials, "base"), measure(trials, "new", scale=lambda t: 1.01, noise=0.01))
    assert c.flagged.empty and len(c.points) == len(trials)
    assert set(c.points["verdict"]) <= {WITHIN_THRESHOLD, WITHIN_SPREAD}


def test_twenty_percent_within_a_huge_spread_is_not_flagged():
    trials = sweep_points()
    base = measure(trials, "base", spread=HUGE_SPREAD)
    new = measure(trials, "new", scale=lambda t: 1.2 if is_triton(t) else 1.0, spread=HUGE_SPREAD)
    c = compare(base, new)
    assert c.flagged.empty
    assert set(c.points.loc[c.points["backend"] == "triton", "verdict"]) == {WITHIN_SPREAD}


def test_improvements_are_reported_never_flagged():
    trials = sweep_points()
    c = compare(measure(trials, "base"), measure(trials, "new", scale=lambda t: 0.7 if is_triton(t) else 1.0))
    assert c.flagged.empty
    assert set(c.points.loc[c.points["verdict"] == IMPROVEMENT, "backend"]) == {"triton"}
    assert (c.groups["improvements"] > 0).sum() == 3 * 2


def test_interpreted_rows_are_left_out_of_the_ratios():
    """Triton decode ran in its CPU interpreter (on both sides, or on NEW only): 3× slower means nothing."""
    trials = sweep_points()
    interpreted = lambda t: is_triton(t) and t.phase == "decode"
    base = [
        r | {"interpreted": r["backend"] == "triton" and r["phase"] == "decode" and r["seq_len"] != 100}
        for r in measure(trials, "base")
    ]
    new = measure(trials, "new", scale=lambda t: 3.0 if interpreted(t) else 1.0)
    new = [r | {"interpreted": r["backend"] == "triton" and r["phase"] == "decode"} for r in new]
    c = compare(base, new)
    left_out = c.points[c.points["verdict"] == INTERPRETED]
    assert len(left_out) == 3 * 3 and left_out["ratio"].isna().all()
    assert c.flagged.empty and "(9 interpreted Triton left out)" in summary_text(c)
    decode = c.groups[(c.groups["backend"] == "triton") & (c.groups["phase"] == "decode")]
    assert (decode["points"] == 0).all() and (decode["no_ratio"] == 3).all()


def test_unmatched_points_on_either_side_are_listed(tmp_path):
    base = measure(sweep_points((100, 384, 1000)), "base")
    new = measure(sweep_points((100, 384, 2000)), "new")
    c = compare(base, new)
    assert len(c.points) == 18 * 2
    assert len(c.base_only) == 18 and set(c.base_only["seq_len"]) == {1000}
    assert len(c.new_only) == 18 and set(c.new_only["seq_len"]) == {2000}
    out = write_comparison(
        str(write_dataset(tmp_path / "a", base)), str(write_dataset(tmp_path / "b", new)), tmp_path / "out"
    )
    page = out.html.read_text()
    assert "18 point(s) only in BASE, 18 only in NEW" in page and "N=2000" in page and "N=1000" in page


def test_status_changes_and_points_that_now_fail():
    trials = sweep_points()
    base, new = measure(trials, "base"), measure(trials, "new")
    broken = next(i for i, t in enumerate(trials) if t.backend == "torch-sdpa" and t.seq_len == 384)
    fixed = next(i for i, t in enumerate(trials) if t.backend == "torch-ref" and t.seq_len == 1000)
    new[broken] = result_row(trials[broken], "new", T0, None, status="error", error="RuntimeError: boom")
    base[fixed] = result_row(trials[fixed], "base", T0, None, status="oom", error="CUDA out of memory")
    c = compare(base, new)
    by_status = c.points.set_index(["base_status", "new_status"])["verdict"]
    assert by_status.loc[("ok", "error")] == NOW_FAILING and by_status.loc[("oom", "ok")] == NOT_OK
    assert list(c.flagged["backend"]) == ["torch-sdpa"]


def test_each_side_keeps_the_latest_ok_row_and_matches_by_configuration():
    """BASE ran twice: a later timeout never replaces an ok row, a later ok row does. NEW's trial_ids
    were hashed differently (another commit) and its seq_len column reads as float: still matched."""
    trials = sweep_points()
    run1 = measure(trials, "base-1")
    faster, failed = trials[0], trials[1]
    later = T0 + timedelta(days=1)
    run2 = [
        result_row(faster, "base-2", later, base_latency(faster) * 0.5),
        result_row(failed, "base-2", later, None, status="timeout", error="trial exceeded its limit"),
    ]
    new = frame(measure(trials, "new"))
    new["trial_id"] = new["trial_id"].map(lambda s: "x" + s[1:])
    new["seq_len"] = new["seq_len"].astype(float)
    c = compare_frames(frame(run1 + run2), new)
    assert len(c.points) == len(trials) and c.base_only.empty and c.new_only.empty
    points = c.points.set_index(["variant", "backend", "phase", "seq_len"])
    key = lambda t: (t.variant, t.backend, t.phase, t.seq_len)
    assert points.loc[key(faster), "base_value"] == pytest.approx(base_latency(faster) * 0.5)
    assert points.loc[key(faster), "verdict"] == REGRESSION  # NEW measures the usual, twice BASE's latest
    assert points.loc[key(failed), "base_status"] == "ok"
    assert points.loc[key(failed), "base_value"] == pytest.approx(base_latency(failed))


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Tag balance and the text of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.text = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def snapshot(path: Path) -> dict:
    return {p.relative_to(path): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


def test_write_comparison_writes_html_and_markdown_and_leaves_the_inputs_alone(tmp_path):
    trials = sweep_points()
    base = write_dataset(tmp_path / "base", measure(trials, "base"))
    new = write_dataset(
        tmp_path / "new", measure(trials, "new", scale=lambda t: 1.2 if is_triton(t) else 1.0)
    )
    before = snapshot(base), snapshot(new)
    out = write_comparison(str(base), str(new), tmp_path / "cmp", threshold="0.05")
    assert (snapshot(base), snapshot(new)) == before
    page = Page(out.html.read_text())
    assert not page.errors and not page.stack
    text = "".join(page.text)
    assert "REGRESSION: 18 point(s) flagged, by backend: triton (18)" in text
    assert "All matched points" in text
    assert not re.search(r'(src|href)="(https?:)?//', out.html.read_text())  # self-contained
    markdown = out.markdown.read_text()
    assert markdown.startswith(f"# attnsweep compare: {base} → {new}") and "## Regressions" in markdown
    assert "All matched points" not in markdown  # the long list is in the HTML only
    for table in (block for block in markdown.split("\n\n") if block.startswith("|")):
        assert len({line.count(" | ") for line in table.splitlines() if not line.startswith("|--")}) == 1
    assert "triton" in out.text and "REGRESSION" in out.text


def test_one_run_of_a_dataset_against_another(tmp_path):
    trials = sweep_points()
    later = T0 + timedelta(days=1)
    dataset = write_dataset(
        tmp_path, measure(trials, "run-a"), measure(trials, "run-b", scale=lambda t: 1.01, start=later)
    )
    out = write_comparison(f"{dataset}@run-a", f"{dataset}@run-b", tmp_path / "cmp")
    c = out.comparison
    assert c.base["runs"] == "run-a" and c.new["runs"] == "run-b" and c.flagged.empty
    assert len(c.points) == len(trials) and c.points["ratio"].between(0.98, 1.03).all()
    assert len(read_results(dataset)) == 2 * len(trials)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(metric="tflops"), "--metric=tflops: unknown metric"),
        (dict(threshold=-0.1), "--threshold=-0.1"),
        (dict(threshold="nan"), "--threshold=nan"),
        (dict(threshold="five"), "--threshold=five"),
    ],
    ids=["unknown-metric", "negative-threshold", "nan-threshold", "word-threshold"],
)
def test_bad_settings_raise_compare_error(kwargs, message):
    rows = measure(sweep_points((100,)), "base")
    with pytest.raises(CompareError, match=message):
        compare(rows, rows, **kwargs)


def test_no_point_in_common_raises_compare_error():
    with pytest.raises(CompareError, match="no point in common"):
        compare(measure(sweep_points((100,)), "base"), measure(sweep_points((128,)), "new"))
