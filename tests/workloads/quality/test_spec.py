"""Trained phases through `run_trial`: every variant trains, prune gives the curve, the quality JSON is
canonical, and what cannot be trained is an `unsupported` row with its reason."""

import dataclasses
import functools
import json
import math

import pytest
import torch

from tests.workloads.variants.cases import SHIPPED, smoke_trial
from workloads.quality.spec import quality_json, trial_settings, trial_task
from workloads.runner import run_trial
from workloads.variants import get_variant

# 4 key-value pairs in 16 tokens; 60 steps: enough for the loss to fall, a second per variant.
TINY = quality_json(
    "mqar",
    {"vocab_size": 32, "num_kv_pairs": 4},
    {"steps": 60, "lr": 3e-3, "warmup_steps": 5, "n_train": 512, "n_eval": 128},
)


def trained_trial(variant="mha", phase="quality", **point):
    point = {
        "batch": 32,
        "seq_len": 16,
        "n_heads": 4,
        "n_kv_heads": 2,
        "head_dim": 8,
        "phase": phase,
        **point,
    }
    trial = smoke_trial(variant, **point)
    return dataclasses.replace(trial, quality=TINY, seed=0)


@functools.cache
def quality_result(variant: str):
    """The quality trial of `variant`, trained once for the tests that read it (a second each)."""
    return run_trial(trained_trial(variant))


@pytest.mark.parametrize("variant", SHIPPED)
def test_every_variant_trains_through_its_reference_layer(variant):
    trial = trained_trial(variant)
    result = quality_result(variant)
    assert result.status == "ok", result.error
    assert result.task == "mqar" and 0.0 <= result.accuracy <= 1.0 and result.train_steps == 60
    losses = [point["loss"] for point in result.train_curve]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0], losses
    assert result.loss == losses[-1]
    # Cost columns describe the attention layer (as in prefill), model_params the whole model.
    layer = get_variant(variant).n_params(dataclasses.replace(trial, phase="train"))
    assert result.n_params == layer and result.model_params > 2 * layer
    assert result.kv_bytes_per_token > 0 and result.latency_ms is None


def test_same_trial_same_accuracy_and_curve():
    first, second = run_trial(trained_trial()), run_trial(trained_trial())
    assert (first.accuracy, first.train_curve) == (second.accuracy, second.train_curve)
    other_seed = run_trial(dataclasses.replace(trained_trial(), seed=1))
    assert other_seed.train_curve != first.train_curve


MASKABLE = [name for name in SHIPPED if get_variant(name).maskable_heads]


@pytest.mark.parametrize("variant", MASKABLE)
def test_prune_gives_accuracy_for_every_number_of_heads_kept(variant):
    result = run_trial(trained_trial(variant, phase="prune"))
    assert result.status == "ok", result.error
    kept = [point["heads_kept"] for point in result.pruning]
    assert kept == list(range(8, 1, -1))  # 2 layers x 4 heads, down to one head per layer
    assert result.pruning[0] == {"heads_kept": 8, "accuracy": result.accuracy, "removed_head": None}
    removed = [point["removed_head"] for point in result.pruning[1:]]
    assert len(set(removed)) == 6 and all(h.split(".")[0] in ("0", "1") for h in removed)
    # The full model of prune is the model quality trains: same seed, same accuracy.
    assert result.accuracy == quality_result(variant).accuracy


@pytest.mark.parametrize(
    "variant,backend,phase,reason",
    [
        ("mha", "torch-sdpa", "quality", "phase quality trains the reference layer of mha"),
        ("mha", "triton", "prune", "phase prune trains the reference layer of mha"),
        ("switchhead", "torch-ref", "prune", "switchhead mixes its heads before the output"),
    ],
    ids=["quality-on-sdpa", "prune-on-triton", "switchhead-heads-not-maskable"],
)
def test_what_cannot_be_trained_is_unsupported_with_the_reason(variant, backend, phase, reason):
    result = run_trial(trained_trial(variant, phase=phase, backend=backend))
    assert result.status == "unsupported" and result.error.startswith(reason), result.error


def test_quality_json_fills_defaults_and_is_canonical():
    spelled_out = quality_json(
        "mqar",
        {"num_kv_pairs": 4, "vocab_size": 32, "power_a": 0.01, "random_non_queries": True},
        {"n_eval": 128, "n_train": 512, "warmup_steps": 5, "lr": 3e-3, "steps": 60, "weight_decay": 0.1},
    )
    assert spelled_out == TINY
    spec = json.loads(TINY)
    assert spec["train"]["n_layers"] == 2 and set(spec["task_params"]) == {
        "vocab_size",
        "num_kv_pairs",
        "power_a",
        "random_non_queries",
    }


def test_trial_gives_task_length_and_training_batch():
    trial = trained_trial(batch=16, seq_len=24)
    assert trial_task(trial).seq_len == 24 and trial_task(trial).num_kv_pairs == 4
    settings = trial_settings(trial)
    assert (settings.batch_size, settings.seed, settings.steps) == (16, 0, 60)


@pytest.mark.parametrize(
    "task,params,train,message",
    [
        ("copy", {}, {}, "task: unknown task 'copy'"),
        ("mqar", {"pairs": 2}, {}, "pairs: unknown parameter of task 'mqar'"),
        ("mqar", {"seq_len": 32}, {}, "seq_len: the task length is the sweep's seq_len axis"),
        ("induction", {"vocab_size": "32"}, {}, "vocab_size: must be int, got str"),
        ("mqar", {}, {"optimizer": "sgd"}, "optimizer: not a training setting"),
    ],
    ids=["unknown-task", "unknown-param", "length-as-param", "wrong-type", "unknown-setting"],
)
def test_quality_json_refuses_what_it_cannot_describe(task, params, train, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        quality_json(task, params, train)


def test_training_leaves_the_global_torch_state_as_it_was():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    run_trial(trained_trial())
    assert torch.equal(torch.rand(3), expected), "the global RNG was reseeded or consumed"
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
