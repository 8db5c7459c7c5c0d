"""plan_trials: the product of the axes with each variant's constraints, stable ids, no duplicates."""

import subprocess
import sys

import pytest

from orchestrator.config import ConfigError, load_config
from orchestrator.planning import plan_trials

GRID = [
    "sweep.variants=[mha,gqa,mqa]",
    "sweep.backends=[torch-sdpa,triton]",
    "sweep.phases=[prefill,decode]",
    "sweep.axes.seq_len=[100,256]",
    "sweep.axes.n_heads=[8,12]",
    "sweep.axes.n_kv_heads=[1,4,8]",
    "sweep.axes.causal=[true,false]",
]


def plan_ids(overrides):
    return [t.trial_id for t in plan_trials(load_config(overrides).sweep).trials]


def test_constraints_applied():
    plan = plan_trials(load_config(GRID).sweep)
    by_variant = {}
    for trial in plan.trials:
        by_variant.setdefault(trial.variant, []).append(trial)
        assert trial.n_heads % trial.n_kv_heads == 0
    assert {t.n_kv_heads for t in by_variant["mqa"]} == {1}
    assert all(t.n_kv_heads == t.n_heads for t in by_variant["mha"])
    # gqa: n_heads 8 takes kv 1, 4, 8; n_heads 12 takes kv 1, 4 (8 does not divide 12)
    assert sorted({(t.n_heads, t.n_kv_heads) for t in by_variant["gqa"]}) == [
        (8, 1),
        (8, 4),
        (8, 8),
        (12, 1),
        (12, 4),
    ]
    assert plan.skipped == {"gqa: n_heads=12 is not divisible by n_kv_heads=8": 2 * 2 * 2 * 2}
    # decode collapses the causal axis (it is causal by construction)
    assert all(t.causal for t in plan.trials if t.phase == "decode")
    # per variant: phases x backends x seq_len x n_heads x (kv choices) x causal choices
    prefill, decode = 2 * 2 * 2, 2 * 2 * 1  # backends * seq_len * causal
    assert len(by_variant["mha"]) == 2 * (prefill + decode)
    assert len(by_variant["mqa"]) == 2 * (prefill + decode)
    assert len(by_variant["gqa"]) == 5 * (prefill + decode)
    assert len({t.trial_id for t in plan.trials}) == len(plan.trials)


def test_ids_stable_across_override_order():
    assert plan_ids(GRID) == plan_ids(list(reversed(GRID)))


def test_ids_stable_across_runs():
    code = f"from tests.orchestrator.test_planning import plan_ids; print(' '.join(plan_ids({GRID!r})))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.split() == plan_ids(GRID)


def test_axis_order_in_config_does_not_change_ids():
    reordered = [o.replace("[100,256]", "[256,100]") for o in GRID]
    assert sorted(plan_ids(reordered)) == sorted(plan_ids(GRID))


def test_variant_params_enter_the_trial():
    trial = plan_trials(load_config(["sweep.variants=[gqa]"]).sweep).trials[0]
    assert trial.params == "{}"


def test_every_variants_defaults_are_in_the_config_and_overridable_without_plus():
    cfg = load_config(["sweep.variants=[mla]", "sweep.params.mla.latent_dim=256"])
    assert cfg.sweep.params["moba"]["block_size"] == 512 and cfg.sweep.params["mla"]["rope_dim"] == 64
    trial = plan_trials(cfg.sweep).trials[0]
    assert trial.param_dict == {"latent_dim": 256, "rope_dim": 64}


def test_a_list_param_is_an_axis_and_points_it_cannot_describe_are_skipped():
    overrides = [
        "sweep.variants=[moh]",
        "sweep.backends=[torch-ref]",
        "sweep.phases=[prefill]",
        "sweep.axes.n_heads=[4]",
        "sweep.axes.seq_len=[64]",
        "sweep.params.moh.shared_heads=1",
        "sweep.params.moh.top_k=[1,3,4]",
    ]
    plan = plan_trials(load_config(overrides).sweep)
    assert sorted(t.param_dict["top_k"] for t in plan.trials) == [1, 3]
    assert len({t.trial_id for t in plan.trials}) == 2
    assert plan.skipped == {"moh: n_heads=4 leaves 3 routed heads for top_k=4 (shared_heads=1)": 1}


def test_variant_without_valid_point_is_refused():
    with pytest.raises(ConfigError, match=r"sweep.axes.n_kv_heads: no valid point for variant gqa"):
        plan_trials(
            load_config(
                ["sweep.variants=[mha,gqa]", "sweep.axes.n_heads=[4]", "sweep.axes.n_kv_heads=[3]"]
            ).sweep
        )


def test_default_sweep_covers_every_variant_backend_phase():
    trials = plan_trials(load_config([]).sweep).trials
    combos = {(t.variant, t.backend, t.phase) for t in trials}
    assert combos == {
        (v, b, p)
        for v in ("mha", "gqa", "mqa")
        for b in ("torch-ref", "torch-sdpa", "triton")
        for p in ("prefill", "decode")
    }


def test_the_inputs_axis_plans_each_kind_and_keeps_randn_ids():
    plain = plan_ids(GRID)
    both = plan_trials(load_config([*GRID, "sweep.axes.inputs=[randn,large_logits]"]).sweep).trials
    assert len(both) == 2 * len(plain)
    assert [t.trial_id for t in both if t.inputs == "randn"] == plain  # the ids of before the axis
    assert {t.inputs for t in both} == {"randn", "large_logits"}


def test_trained_phases_take_no_input_kind():
    overrides = ["sweep.phases=[quality]", "sweep.backends=[torch-ref]", "sweep.axes.inputs=[outliers]"]
    with pytest.raises(ConfigError, match="sweep.axes.inputs: no valid point for variant mha"):
        plan_trials(load_config(overrides).sweep)
