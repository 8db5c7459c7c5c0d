"""Input kinds (the inputs axis): each has the statistics it promises, and randn is what every trial
had before the axis existed (same inputs, same trial ids)."""

import math

import pytest
import torch

from tests.workloads.variants.cases import make_inputs, make_trial
from workloads.inputs import LOGIT_SCALE, OUTLIER_CHANNELS, OUTLIER_GAIN, outlier_channels

SHAPE = {"batch": 2, "seq_len": 96, "n_heads": 4, "n_kv_heads": 2, "head_dim": 40}


def _inputs(kind: str, phase: str = "prefill") -> dict[str, torch.Tensor]:
    return make_inputs(make_trial("gqa", inputs=kind, phase=phase, **SHAPE))


def _scores(x: dict[str, torch.Tensor]) -> torch.Tensor:
    k = x["k"].repeat_interleave(2, dim=1)  # [B, H, N, D]
    return x["q"] @ k.transpose(-1, -2) / math.sqrt(x["q"].shape[-1])


def test_randn_is_the_inputs_of_before_the_axis():
    plain = make_trial("gqa", **SHAPE)
    assert plain.inputs == "randn" and "inputs" not in plain.config()
    assert plain.trial_id != make_trial("gqa", inputs="large_logits", **SHAPE).trial_id
    for name, value in _inputs("randn").items():
        assert torch.equal(value, make_inputs(plain)[name])


def test_large_logits_give_scores_of_magnitude_30_to_100():
    scores = _scores(_inputs("large_logits"))
    assert 0.9 * LOGIT_SCALE < scores.std().item() < 1.1 * LOGIT_SCALE
    assert 20 < scores.abs().median().item() < 50 and scores.abs().quantile(0.9).item() < 110
    assert 0.9 < _scores(_inputs("randn")).std().item() < 1.1


@pytest.mark.parametrize("phase,names", [("prefill", ("k", "v")), ("decode", ("k_cache", "v_cache"))])
def test_outliers_scale_a_few_channels_of_keys_and_values(phase, names):
    x, plain = _inputs("outliers", phase), _inputs("randn", phase)
    channels = outlier_channels(SHAPE["head_dim"])
    assert len(channels) == OUTLIER_CHANNELS
    for name in names:
        std = x[name].flatten(0, -2).std(dim=0)  # per channel
        assert torch.allclose(x[name][..., channels], plain[name][..., channels] * OUTLIER_GAIN)
        others = [c for c in range(SHAPE["head_dim"]) if c not in channels]
        assert torch.equal(x[name][..., others], plain[name][..., others])
        assert (std[channels] > 50).all() and (std[others] < 2).all()
    assert torch.equal(x["q"], plain["q"])


def test_long_tail_values_have_heavy_tails():
    x, plain = _inputs("long_tail"), _inputs("randn")
    v = x["v"].flatten()
    beyond_4 = (v.abs() > 4).float().mean().item()  # Student t, 3 degrees: ~2.8%; a normal: 0.006%
    assert 0.015 < beyond_4 < 0.05
    assert (plain["v"].flatten().abs() > 4).float().mean().item() < 0.001
    assert torch.equal(x["q"], plain["q"]) and torch.equal(x["k"], plain["k"])
