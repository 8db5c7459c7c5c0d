"""Weighted grouped-query attention (WGQA, Chinnakonduru & Mohapatra 2024): learned pooling of K/V heads.

Keys and values are projected per query head, k, v [B, H, N, D], and pooled per group of r = H/G heads
with learned per-head weights w_k, w_v [H]:

    K_g = (1/r) Σ_{h in g} w_k[h] k_h,   V_g = (1/r) Σ_{h in g} w_v[h] v_h      [B, G, N, D]

then GQA with q [B, H, N, D] -> o [B, H, N, D]. The weights are stored times r (init ones), so the layer
starts as mean pooling (the GQA uptraining recipe) with the base's "ones" init. The measured prefill op
covers the pooling and the attention. At inference the weights fold into W_K, W_V (K_g = x Σ_h w_k[h]
W_K,h / r), so decode is GQA decode over a GQA cache [B, G, L, D]: its inputs are that cache, and the
layer's parameter count (`n_params`) stays the trainable one for every phase.
"""

from dataclasses import replace

import torch

from workloads.backends import IMPLEMENTED_BACKENDS
from workloads.trial import Trial
from workloads.variants.base import Cost, Implementation, InputSpec, TokenInput, Variant, Weight
from workloads.variants.gqa import GroupedQueryAttention, grouped_attention_cost, qkv_specs
from workloads.variants.routing import with_extra


def pooled_heads(heads: torch.Tensor, weights: torch.Tensor, n_groups: int) -> torch.Tensor:
    """heads [B, H, N, D], weights [H] -> [B, G, N, D]: weighted mean over each group of H/G heads."""
    batch, n_heads, n, d = heads.shape
    per_group = n_heads // n_groups
    grouped = heads.view(batch, n_groups, per_group, n, d)  # query head h = g·r + i pools into group g
    return torch.einsum("bgrnd,gr->bgnd", grouped, weights.view(n_groups, per_group) / per_group)


def _prefill(backend: str) -> Implementation:
    grouped = GroupedQueryAttention.implementations[(backend, "prefill")]

    def run(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
        g = trial.n_kv_heads
        pooled = {name: pooled_heads(x[name], x[f"{name}_head_weights"], g) for name in ("k", "v")}
        return grouped(trial, {"q": x["q"], **pooled})

    return run


class WeightedGroupedQueryAttention(Variant):
    name = "wgqa"
    summary = "weighted GQA: K/V heads pooled per group with learned weights (fold into W_K/W_V at inference)"
    kv_heads = "axis"
    implementations = {
        **{(backend, "prefill"): _prefill(backend) for backend in IMPLEMENTED_BACKENDS},
        **{
            (backend, "decode"): GroupedQueryAttention.implementations[(backend, "decode")]
            for backend in IMPLEMENTED_BACKENDS
        },
    }
    train_backends = IMPLEMENTED_BACKENDS

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        if trial.phase == "decode":
            return qkv_specs(trial)  # weights folded: a GQA cache of G heads
        h, d = trial.n_heads, trial.head_dim
        return [
            TokenInput("q", (h, d)),
            TokenInput("k", (h, d)),
            TokenInput("v", (h, d)),
            Weight("k_head_weights", (h,), init="ones"),
            Weight("v_head_weights", (h,), init="ones"),
        ]

    def n_params(self, trial: Trial) -> int:
        # The trainable layer's count in every phase (decode's inputs are the folded cache).
        return super().n_params(replace(trial, phase="prefill"))

    def cost(self, trial: Trial) -> Cost:
        grouped = grouped_attention_cost(trial, self.n_params(trial))
        if trial.phase == "decode":
            return grouped
        b, h, g, n, d = trial.batch, trial.n_heads, trial.n_kv_heads, trial.seq_len, trial.head_dim
        # k and v come as H heads, not G: (H - G) more of each read; a multiply-add per element pools them.
        return with_extra(
            grouped, trial, flops=2.0 * 2 * b * h * n * d, elements=2 * b * (h - g) * n * d + 2 * h
        )


VARIANT = WeightedGroupedQueryAttention()
