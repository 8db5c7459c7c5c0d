"""quality_blocks and pareto_front on hand-built rows of the trained phases (quality, prune) and prefill.

The dataset: variants mha and gqa, two head settings each, two seeds, one task; prefill rows that give
two of the four configurations a latency (an interpreted Triton row, faster on paper, must never be
used); prune rows of mha H=4/4 for both seeds. Expected numbers are computed here with `statistics`.
"""

import json
import statistics
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

# Hosts without matplotlib (the GPU host: see tests/test_collection.py) skip this module.
pytest.importorskip("matplotlib")

from analysis.blocks import Block, Table
from analysis.quality import pareto_front, quality_blocks
from analysis.report import build_report
from analysis.rows import latest_per_trial, load_results
from analysis.schema import COLUMNS
from tests.analysis.test_report import Page, figures, md_tables

HEAD_DIM, BATCH, SEQ_LEN, N_LAYERS = 16, 32, 64, 2
TRAIN = {"lr": 0.003, "n_eval": 500, "n_layers": N_LAYERS, "n_train": 4000, "steps": 200}
TASK_PARAMS = {"num_kv_pairs": 4, "power_a": 0.01, "vocab_size": 128}
# (variant, n_heads, n_kv_heads) -> held-out accuracy of seeds 0 and 1
ACCURACY = {
    ("mha", 2, 2): (0.70, 0.74),
    ("mha", 4, 4): (0.95, 0.91),
    ("gqa", 2, 1): (0.60, 0.66),
    ("gqa", 4, 2): (0.88, 0.86),
}
# kv bytes/token = 2·kv·d·4: gqa 2/1 128 B at 0.63, gqa 4/2 256 B at 0.87 (beats mha 2/2, 256 B at 0.72),
# mha 4/4 512 B at 0.93.
KV_FRONT = {("gqa", 2, 1), ("gqa", 4, 2), ("mha", 4, 4)}
MEASURED = ("mha", 4, 4, "torch-sdpa", 0.5)  # the latency mha 4/4 must get
INTERPRETED_LATENCY = 0.001  # triton in its interpreter, same shape: never a latency
PRUNE_ACCURACY = {
    0: (0.95, 0.94, 0.93, 0.90, 0.85, 0.70, 0.50),
    1: (0.91, 0.91, 0.89, 0.88, 0.80, 0.72, 0.40),
}
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def quality_json(**train) -> str:
    spec = {"task": "mqar", "task_params": TASK_PARAMS, "train": {**TRAIN, **train}}
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def row(i: int, **values) -> dict:
    r = {c: None for c in COLUMNS}
    r.update(
        sweep="quality-test",
        run_id="run-q",
        trial_id=f"t{i:04d}",
        attempt=1,
        head_dim=HEAD_DIM,
        batch=BATCH,
        seq_len=SEQ_LEN,
        causal=True,
        params="{}",
        status="ok",
        interpreted=False,
        device="NVIDIA H100 80GB HBM3",
        timestamp=T0 + timedelta(seconds=i),
    )
    r.update(values)
    return r


def trained(i: int, phase: str, variant: str, h: int, kv: int, seed: int, accuracy: float, **more) -> dict:
    return row(
        i,
        variant=variant,
        backend="torch-ref",
        phase=phase,
        n_heads=h,
        n_kv_heads=kv,
        dtype="float32",
        quality=quality_json(),
        seed=seed,
        task="mqar",
        accuracy=accuracy,
        loss=1.0 - accuracy,
        train_steps=TRAIN["steps"],
        model_params=10_000 * h,
        train_curve=[{"step": 100, "loss": 2.0}, {"step": 200, "loss": 1.0 - accuracy}],
        kv_bytes_per_token=2 * kv * HEAD_DIM * 4,
        n_params=4 * (h * HEAD_DIM) ** 2,
        **more,
    )


def prefill(i: int, variant: str, h: int, kv: int, backend: str, latency: float, **more) -> dict:
    values = dict(
        variant=variant, backend=backend, phase="prefill", n_heads=h, n_kv_heads=kv, dtype="float16"
    )
    values.update(latency_ms=latency, latency_ms_p20=latency * 0.9, latency_ms_p80=latency * 1.1)
    values.update(kv_bytes_per_token=2 * kv * HEAD_DIM * 2, **more)
    return row(i, **values)


def make_rows() -> pd.DataFrame:
    rows = []
    for (variant, h, kv), accs in ACCURACY.items():
        for seed, acc in enumerate(accs):
            rows.append(trained(len(rows), "quality", variant, h, kv, seed, acc))
    variant, h, kv, backend, latency = MEASURED
    rows += [
        prefill(len(rows), variant, h, kv, "triton", INTERPRETED_LATENCY, interpreted=True),
        prefill(len(rows) + 1, variant, h, kv, backend, latency),
        prefill(len(rows) + 2, variant, h, kv, "torch-ref", 0.9),
        prefill(len(rows) + 3, "gqa", 4, 2, "torch-sdpa", 0.3),
        prefill(len(rows) + 4, "gqa", 2, 1, "torch-sdpa", 0.1, batch=BATCH * 2),  # another batch: no match
        prefill(len(rows) + 5, "mha", 2, 2, "torch-sdpa", 0.2, status="oom", latency_ms=None),
    ]
    for seed, accs in PRUNE_ACCURACY.items():
        for step, acc in enumerate(accs):
            removed = None if step == 0 else f"{step % N_LAYERS}.{step // N_LAYERS}"
            heads = 4 * N_LAYERS - step
            rows.append(
                trained(len(rows), "prune", "mha", 4, 4, seed, acc, heads_kept=heads, removed_head=removed)
            )
    return pd.DataFrame(rows)


def blocks_of(df: pd.DataFrame) -> list[Block]:
    return quality_blocks(latest_per_trial(load_results(df)))


def table_after(blocks: list[Block], heading: str, nth: int = 0) -> Table:
    start = next(i for i, b in enumerate(blocks) if b.kind == "h3" and b.content == heading)
    return [b.content for b in blocks[start:] if b.kind == "table"][nth]


def records(table: Table) -> list[dict[str, str]]:
    text = [[c if isinstance(c, str) else getattr(c, "text", str(c)) for c in r] for r in table.rows]
    return [dict(zip(table.headers, r, strict=True)) for r in text]


def text_of(blocks: list[Block]) -> str:
    return "\n".join(str(b.content) for b in blocks if b.kind in ("h2", "h3", "p"))


@pytest.mark.parametrize(
    "cost, accuracy, front",
    [
        pytest.param([1.0], [0.5], [True], id="single-point"),
        pytest.param([], [], [], id="empty"),
        pytest.param([1, 2, 3], [0.5, 0.7, 0.9], [True, True, True], id="trade-off-chain"),
        pytest.param([1, 2, 3], [0.9, 0.7, 0.95], [True, False, True], id="dearer-and-worse-dominated"),
        pytest.param([2, 2], [0.6, 0.8], [False, True], id="tie-in-cost-lower-accuracy-loses"),
        pytest.param([1, 3], [0.8, 0.8], [True, False], id="tie-in-accuracy-dearer-loses"),
        pytest.param([2, 2, 5], [0.8, 0.8, 0.7], [True, True, False], id="duplicates-both-on-front"),
        pytest.param([1, np.nan, 3], [0.5, 0.99, 0.9], [True, False, True], id="nan-cost-ignored"),
        pytest.param([1, 2], [np.nan, 0.4], [False, True], id="nan-accuracy-dominates-nothing"),
    ],
)
def test_pareto_front(cost, accuracy, front):
    mask = pareto_front(cost, accuracy)
    assert mask.dtype == bool and mask.tolist() == front


def test_pareto_front_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="one length"):
        pareto_front([1, 2], [0.5])


def test_accuracy_table_pools_seeds():
    table = table_after(blocks_of(make_rows()), "Accuracy by variant and heads")
    got = records(table)
    assert "params" not in table.headers and "training" not in table.headers
    expected = sorted(ACCURACY.items(), key=lambda item: -statistics.mean(item[1]))
    assert [(r["variant"], r["heads"], r["kv heads"]) for r in got] == [
        (v, str(h), str(kv)) for (v, h, kv), _ in expected
    ]
    for r, ((_, h, kv), accs) in zip(got, expected, strict=True):
        assert r["accuracy"] == f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}"
        assert r["min"] == f"{min(accs):.3f}" and r["seeds"] == "2" and r["task"] == "mqar"
        assert r["KV bytes/token"] == str(2 * kv * HEAD_DIM * 4) and r["model params"] == str(10_000 * h)


def test_one_seed_shows_no_spread():
    df = make_rows()
    df = df[~(df["phase"].eq("quality") & df["seed"].eq(1))]
    got = records(table_after(blocks_of(df), "Accuracy by variant and heads"))
    assert {r["accuracy"] for r in got} == {f"{accs[0]:.3f}" for accs in ACCURACY.values()}
    assert all(r["seeds"] == "1" for r in got)


def test_common_settings_stated_once_and_differences_as_a_column():
    blocks = blocks_of(make_rows())
    assert (
        "steps=200" in text_of(blocks)
        and "lr=0.003" in text_of(blocks)
        and "num_kv_pairs=4" in text_of(blocks)
    )
    df = make_rows()
    longer = df["variant"].eq("mha") & df["phase"].eq("quality")
    df.loc[longer, "quality"] = quality_json(steps=400)
    blocks = blocks_of(df)
    got = records(table_after(blocks, "Accuracy by variant and heads"))
    assert {(r["variant"], r["training"]) for r in got} == {("mha", "steps=400"), ("gqa", "steps=200")}
    assert "lr=0.003" in text_of(blocks) and "steps=200" not in text_of(blocks)


@pytest.mark.parametrize(
    "drop, latency, backend",
    [
        pytest.param(None, "0.500", "torch-sdpa", id="measured-sdpa-not-faster-interpreted-triton"),
        pytest.param("torch-sdpa", "0.900", "torch-ref", id="next-fastest-measured-backend"),
        pytest.param("all-measured", "—", "—", id="interpreted-only-gives-no-latency"),
    ],
)
def test_latency_is_the_fastest_measured_prefill_row(drop, latency, backend):
    df = make_rows()
    is_prefill = df["phase"].eq("prefill")
    if drop == "all-measured":
        df = df[~is_prefill | df["interpreted"]]
    elif drop:
        df = df[~(is_prefill & df["backend"].eq(drop) & df["variant"].eq("mha"))]
    blocks = blocks_of(df)
    got = {
        (r["variant"], r["heads"]): r for r in records(table_after(blocks, "Accuracy by variant and heads"))
    }
    if drop == "all-measured":
        assert "prefill ms" not in got["mha", "4"]
        assert "4 of 4 configurations have no latency" in text_of(blocks)
    else:
        assert (got["mha", "4"]["prefill ms"], got["mha", "4"]["prefill backend"]) == (latency, backend)
        assert (got["gqa", "4"]["prefill ms"], got["gqa", "4"]["prefill backend"]) == ("0.300", "torch-sdpa")
        assert got["gqa", "2"]["prefill ms"] == "—"  # its prefill row has another batch
        assert got["mha", "2"]["prefill ms"] == "—"  # its prefill row ran out of memory
        assert "2 of 4 configurations have no latency" in text_of(blocks)
    assert "interpreted Triton rows are never used" in text_of(blocks)
    figure = next(b.content for b in blocks if b.kind == "raw" and "Quality against cost" in b.content)
    assert ("prefill latency (ms" in figure) == (drop != "all-measured")
    assert "KV cache per token and layer (bytes" in figure and "held-out accuracy" in figure


def test_pareto_front_table():
    blocks = blocks_of(make_rows())
    got = records(table_after(blocks, "Quality vs cost"))
    kv = [r for r in got if r["cost"] == "KV bytes/token"]
    names = {f"{v} H={h}/{kv_heads} d={HEAD_DIM}": (v, h, kv_heads) for v, h, kv_heads in ACCURACY}
    assert {names[r["configuration"]] for r in kv} == KV_FRONT
    assert [r["cost value"] for r in kv] == ["128", "256", "512"]  # sorted by cost
    assert kv[-1]["accuracy"] == f"{statistics.mean(ACCURACY['mha', 4, 4]):.3f}"
    latency = [
        (names[r["configuration"]], r["cost value"], r["backend"]) for r in got if r["cost"] == "prefill ms"
    ]
    # gqa 4/2 is faster (0.3 ms) but less accurate than mha 4/4 (0.5 ms): both on the front.
    assert latency == [(("gqa", 4, 2), "0.300", "torch-sdpa"), (("mha", 4, 4), "0.500", "torch-sdpa")]


def test_prune_table_and_figure():
    blocks = blocks_of(make_rows())
    table = table_after(blocks, "Head pruning")
    heads = [str(h) for h in range(4 * N_LAYERS, 1, -1)]
    assert table.headers == ["task", "configuration", "seed", *heads]
    got = records(table)
    assert [r["seed"] for r in got] == ["0", "1", "mean of 2 seeds"]
    for seed, accs in PRUNE_ACCURACY.items():
        assert [got[seed][h] for h in heads] == [f"{a:.3f}" for a in accs]
    means = [f"{statistics.mean(pair):.3f}" for pair in zip(*PRUNE_ACCURACY.values(), strict=True)]
    assert [got[2][h] for h in heads] == means
    assert table.rows[0][4].sub == "removed 1.0"  # the head removed to reach 7 kept
    assert "Michel et al. 2019" in text_of(blocks)
    svgs = [b.content for b in blocks if b.kind == "raw"]
    assert len(svgs) == 2 and all("<svg" in s for s in svgs)
    assert "heads kept (all layers)" in svgs[1] and "Head pruning" in svgs[1]


def test_build_report_has_the_quality_section(tmp_path):
    paths = build_report(make_rows(), tmp_path)
    html_text, markdown = paths.html.read_text(encoding="utf-8"), paths.markdown.read_text(encoding="utf-8")
    page = Page(html_text)
    assert page.errors == []
    # prefill: speedup and latency; memory against heads (2 and 4 heads); quality vs cost; pruning; KV bars
    assert page.tags["svg"] == 6, figures(html_text)
    for heading in (
        "## Quality",
        "### Accuracy by variant and heads",
        "### Quality vs cost",
        "### Head pruning",
    ):
        assert heading in markdown
    assert "## Phase: prefill" in markdown
    assert "Phase: quality" not in markdown and "Phase: prune" not in markdown
    assert (
        markdown.index("## Quality") < markdown.index("## KV cache per token") < markdown.index("## Failures")
    )
    assert any(t[0].startswith("| task | variant | heads | kv heads |") for t in md_tables(markdown))
    assert "<svg" not in markdown


def test_without_trained_rows_there_is_no_quality_section(results_df):
    kept = latest_per_trial(load_results(results_df))
    assert quality_blocks(kept) == []
    only_prefill = make_rows()
    assert blocks_of(only_prefill[only_prefill["phase"].eq("prefill")]) == []


def test_all_trained_rows_failed(tmp_path):
    df = make_rows()
    trained_rows = df["phase"].isin(["quality", "prune"])
    df.loc[trained_rows, "status"] = "error"
    df.loc[trained_rows, "error"] = "RuntimeError: loss is NaN"
    df.loc[trained_rows, ["accuracy", "loss"]] = None
    blocks = blocks_of(df)
    text = text_of(blocks)
    assert "No ok quality rows." in text and "No ok prune rows." in text
    assert "8 quality rows did not finish ok (error: 8); see Failures." in text
    assert not any(b.kind == "raw" for b in blocks)
    paths = build_report(df, tmp_path)
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert Page(paths.html.read_text(encoding="utf-8")).errors == []
    assert "| error | mha | torch-ref | quality | 4 | RuntimeError: loss is NaN |" in markdown
    assert "seed=1" in paths.html.read_text(encoding="utf-8")  # the failure's point names its seed


def test_pareto_fronts_are_per_task_and_wide_ranges_go_log():
    """An induction point as accurate as any and as cheap as any must not push mqar points off their front."""
    df = make_rows()
    other = df[df["phase"].eq("quality")].copy()
    other["trial_id"] = "induction-" + other["trial_id"]
    other["task"] = "induction"
    other["quality"] = other["quality"].str.replace('"task":"mqar"', '"task":"induction"')
    other["accuracy"] = 0.99
    other.loc[other["variant"].eq("gqa") & other["n_kv_heads"].eq(1), "kv_bytes_per_token"] = 8  # 512/8 > 30
    blocks = blocks_of(pd.concat([df, other], ignore_index=True))
    kv = [r for r in records(table_after(blocks, "Quality vs cost")) if r["cost"] == "KV bytes/token"]
    assert [(r["task"], r["cost value"]) for r in kv] == [
        ("induction", "8"),
        ("mqar", "128"),
        ("mqar", "256"),
        ("mqar", "512"),
    ]
    figure = next(b.content for b in blocks if b.kind == "raw" and "Quality against cost" in b.content)
    assert "KV cache per token and layer (bytes, log scale)" in figure  # induction: 8 to 512 bytes
    assert "KV cache per token and layer (bytes)" in figure  # mqar: 128 to 512 bytes
    accuracy = records(table_after(blocks, "Accuracy by variant and heads"))
    assert [r["task"] for r in accuracy] == ["induction"] * 4 + ["mqar"] * 4
    assert all(r["accuracy"] == "0.990 ± 0.000" for r in accuracy[:4])


def test_prune_only_dataset(tmp_path):
    df = make_rows()
    blocks = blocks_of(df[df["phase"].eq("prune")])
    assert "Phase quality did not run." in text_of(blocks)
    assert [b.content for b in blocks if b.kind == "h3"] == ["Accuracy by variant and heads", "Head pruning"]
    assert len(records(table_after(blocks, "Head pruning"))) == 3
    assert (
        Page(build_report(df[df["phase"].eq("prune")], tmp_path).html.read_text(encoding="utf-8")).errors
        == []
    )
