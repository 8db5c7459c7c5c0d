"""Planning of the trained phases (quality, prune): tasks x seeds, torch-ref/float32/causal only,
task lengths checked, and the d_model axis that compares heads at one width."""

import json

import pytest

from orchestrator.config import load_config
from orchestrator.planning import plan_trials

MIXED = [
    "sweep.variants=[mha,gqa]",
    "sweep.backends=[torch-ref,torch-sdpa]",
    "sweep.phases=[quality,prefill]",
    "sweep.axes.seq_len=[32]",
    "sweep.axes.n_heads=[4]",
    "sweep.axes.n_kv_heads=[2]",
    "sweep.quality.tasks=[mqar,induction]",
    "sweep.quality.seeds=[0,1]",
    "sweep.quality.steps=20",
]


def plan(overrides):
    return plan_trials(load_config(overrides).sweep)


def changed(overrides, *changes):
    """`overrides` with the keys of `changes` replaced (a key given twice is refused)."""
    keys = {change.split("=", 1)[0] for change in changes}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + list(changes)


def test_trained_phase_is_one_trial_per_task_and_seed_on_torch_ref_only():
    result = plan(MIXED)
    quality = [t for t in result.trials if t.phase == "quality"]
    prefill = [t for t in result.trials if t.phase == "prefill"]
    assert {(t.variant, t.backend) for t in quality} == {("mha", "torch-ref"), ("gqa", "torch-ref")}
    assert sorted((t.variant, json.loads(t.quality)["task"], t.seed) for t in quality) == sorted(
        (v, task, seed) for v in ("mha", "gqa") for task in ("mqar", "induction") for seed in (0, 1)
    )
    assert len(prefill) == 2 * 2 and all(t.quality == "" and t.seed is None for t in prefill)
    reason = "phase quality trains the reference layer (backend torch-ref)"
    assert result.skipped == {f"mha: {reason}": 4, f"gqa: {reason}": 4}


def test_quality_json_has_every_default_and_the_overrides():
    trial = next(
        t for t in plan([*MIXED, "sweep.quality.task_params.mqar.num_kv_pairs=4"]).trials if t.seed == 0
    )
    spec = json.loads(trial.quality)
    assert spec["task"] == "mqar" and spec["task_params"]["num_kv_pairs"] == 4
    assert spec["task_params"]["vocab_size"] == 128 and "seq_len" not in spec["task_params"]
    assert spec["train"]["steps"] == 20 and spec["train"]["lr"] == 1e-3 and "seed" not in spec["train"]


def test_training_settings_change_trained_ids_and_leave_benchmark_ids_alone():
    base = {t.trial_id: t for t in plan(MIXED).trials}
    other = {t.trial_id: t for t in plan(changed(MIXED, "sweep.quality.steps=21")).trials}
    assert {i for i, t in base.items() if t.phase == "prefill"} == {
        i for i, t in other.items() if t.phase == "prefill"
    }
    assert not {i for i, t in base.items() if t.phase == "quality"} & set(other)


@pytest.mark.parametrize(
    "override,reason",
    [
        ("sweep.axes.dtype=[float32,bfloat16]", "phase quality trains in float32"),
        ("sweep.axes.causal=[true,false]", "phase quality trains a causal language model"),
        ("sweep.axes.seq_len=[31,32]", "task mqar at seq_len=31, batch=1: seq_len: must be even, got 31"),
        (
            "sweep.axes.batch=[1,5000]",
            "task mqar at seq_len=32, batch=5000: batch: 5000 exceeds n_train=1000",
        ),
    ],
    ids=["dtype", "causal", "odd-task-length", "batch-above-n-train"],
)
def test_points_a_trained_phase_cannot_train_are_skipped_with_the_reason(override, reason):
    base = [
        "sweep.variants=[mha]",
        "sweep.backends=[torch-ref]",
        "sweep.phases=[quality]",
        "sweep.axes.seq_len=[32]",
        "sweep.quality.n_train=1000",
    ]
    result = plan(changed(base, override))
    assert len(result.trials) == 1
    (skipped,) = result.skipped
    assert skipped == f"mha: {reason}"


def test_d_model_axis_sets_head_dim_per_head_count():
    result = plan(
        [
            "sweep.variants=[mha]",
            "sweep.axes.n_heads=[2,3,4]",
            "sweep.axes.d_model=[64,96]",
            "sweep.axes.head_dim=[7]",
        ]
    )
    assert sorted({(t.n_heads, t.head_dim) for t in result.trials}) == [
        (2, 32),
        (2, 48),
        (3, 32),
        (4, 16),
        (4, 24),
    ]
    assert set(result.skipped) == {"mha: d_model=64 is not divisible by n_heads=3"}


def test_prune_plans_like_quality():
    result = plan(changed(MIXED, "sweep.phases=[prune]", "sweep.variants=[mha,switchhead]"))
    assert {(t.variant, t.phase) for t in result.trials} == {("mha", "prune"), ("switchhead", "prune")}
    assert len(result.trials) == 2 * 2 * 2
