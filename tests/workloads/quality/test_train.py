"""train_variant: a tiny MQAR is learned through the attention layers, and only through them;
the same settings give the same accuracy; the learning-rate schedule."""

import pytest

from workloads.quality.model import TinyLM
from workloads.quality.tasks import make_task
from workloads.quality.train import (
    TrainSettings,
    deterministic,
    learning_rate,
    train_and_evaluate,
    train_variant,
)
from workloads.variants.layer import layer_trial

# 4 key-value pairs in 24 tokens: a 2-layer, 2-head model of width 32 learns it in a few seconds.
TASK = make_task("mqar", vocab_size=48, seq_len=24, num_kv_pairs=4)
SETTINGS = TrainSettings(steps=400, batch_size=64, lr=3e-3, warmup_steps=20, n_train=4000, n_eval=500)
MHA = layer_trial("mha", n_heads=2, n_kv_heads=2, head_dim=16)


def test_mha_learns_tiny_mqar_and_frozen_attention_does_not():
    """Recall needs attention: with the attention layers frozen at their random initialisation, the
    embeddings and MLPs alone stay near chance (1 / 24 values)."""
    _, learned = train_variant(MHA, TASK, SETTINGS)
    assert learned.accuracy >= 0.9, learned
    assert learned.curve[0][1] > learned.loss and learned.steps == 400
    with deterministic(SETTINGS.seed):
        model = TinyLM(MHA, TASK.vocab_size, TASK.seq_len)
        for layer in model.attention_layers():
            layer.requires_grad_(False)
        frozen = train_and_evaluate(model, TASK, SETTINGS)
    assert frozen.accuracy < 0.3, frozen


def test_same_settings_same_accuracy_and_curve():
    short = TrainSettings(steps=30, batch_size=32, n_train=256, n_eval=64, log_every=10)
    first, second = (train_variant(MHA, TASK, short)[1] for _ in range(2))
    assert first.accuracy == second.accuracy and first.curve == second.curve
    _, other_seed = train_variant(MHA, TASK, TrainSettings(**{**short.__dict__, "seed": 1}))
    assert other_seed.curve != first.curve


@pytest.mark.parametrize("step,expected", [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.5), (100, 0.0)])
def test_learning_rate_warms_up_then_decays_by_cosine(step, expected):
    settings = TrainSettings(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(step, settings) == pytest.approx(expected, abs=1e-9)
