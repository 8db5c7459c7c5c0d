"""prune_greedily: an accuracy-vs-heads-kept curve from a trained MHA model, least important head first."""

import pytest
import torch

from workloads.quality.model import TinyLM
from workloads.quality.pruning import head_importance, prune_greedily
from workloads.quality.tasks import make_task
from workloads.quality.train import TrainSettings, accuracy, deterministic, train_and_evaluate
from workloads.variants.layer import layer_trial

TASK = make_task("mqar", vocab_size=48, seq_len=24, num_kv_pairs=4)


@pytest.fixture(scope="module")
def trained():
    """A 2-layer MHA model with 4 heads per layer, trained on a tiny MQAR (a few seconds)."""
    settings = TrainSettings(steps=400, batch_size=64, lr=3e-3, warmup_steps=20, n_train=4000, n_eval=500)
    with deterministic(0):
        model = TinyLM(layer_trial("mha", n_heads=4, n_kv_heads=4, head_dim=8), TASK.vocab_size, TASK.seq_len)
        outcome = train_and_evaluate(model, TASK, settings)
    return model, outcome, TASK.generate(512, 0), TASK.generate(500, 1)


def test_curve_goes_from_every_head_to_one_per_layer(trained):
    model, outcome, train, held_out = trained
    points = prune_greedily(model, train, held_out)
    assert [p.heads_kept for p in points] == list(range(8, 1, -1))
    assert points[0].removed is None and points[0].accuracy == outcome.accuracy
    removed = [p.removed for p in points[1:]]
    assert len(set(removed)) == len(removed), "a head is removed once"
    assert (
        sorted(layer for layer, _ in removed).count(0) <= 3
        and sorted(layer for layer, _ in removed).count(1) <= 3
    )
    assert points[-1].accuracy < points[0].accuracy, "removing 6 of 8 heads costs accuracy"
    assert all(torch.equal(layer.head_mask, torch.ones(4)) for layer in model.attention_layers()), (
        "masks restored"
    )


def test_the_least_important_head_goes_first(trained):
    model, _, train, held_out = trained
    importance = head_importance(model, *train)  # [layers, heads]
    assert importance.shape == (2, 4) and (importance >= 0).all()
    first = prune_greedily(model, train, held_out)[1]
    assert first.removed == divmod(int(importance.argmin()), 4)
    layer, head = divmod(int(importance.argmax()), 4)
    masks = model.attention_layers()[layer].head_mask
    masks[head] = 0.0
    without_most_important = accuracy(model, *held_out)
    masks[head] = 1.0
    assert first.accuracy >= without_most_important
