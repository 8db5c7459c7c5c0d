"""Knocking-heads attention (KHA, 2025): one shared projection per q, k, v applied to every head first.

q [B, H, N, D], k, v [B, G, N, D]; T_q, T_k, T_v [D, D] shared by all heads (identity at init, so
training starts from plain GQA and learns to mix each head's features):

    q_h ← q_h T_q,  k_g ← k_g T_k,  v_g ← v_g T_v,  then GQA attention   -> o [B, H, N, D]

At inference T folds into W_Q, W_K, W_V (q_h T_q = x (W_Q,h T_q)), so a deployed KHA layer costs what
GQA costs; the measured op keeps the transforms (2·D² FLOPs more per head and token) as in training.
Decode: the caches hold already-transformed k, v (each token's T_k, T_v applied when it was computed),
so only the new token's query is transformed before GQA decode.
"""

import torch

from workloads.backends import IMPLEMENTED_BACKENDS
from workloads.trial import Trial
from workloads.variants.base import Cost, Implementation, InputSpec, Variant, Weight
from workloads.variants.gqa import GroupedQueryAttention, grouped_attention_cost, qkv_specs
from workloads.variants.routing import query_rows, with_extra


def _prefill(backend: str) -> Implementation:
    grouped = GroupedQueryAttention.implementations[(backend, "prefill")]

    def run(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
        # [B, H or G, N, D] @ [D, D]: the same T for every head
        return grouped(trial, {name: x[name] @ x[f"t_{name}"] for name in ("q", "k", "v")})

    return run


def _decode(backend: str) -> Implementation:
    grouped = GroupedQueryAttention.implementations[(backend, "decode")]

    def run(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return grouped(trial, {**x, "q": x["q"] @ x["t_q"]})  # q [B, H, D] @ [D, D]

    return run


class KnockingHeadsAttention(Variant):
    name = "kha"
    summary = "knocking-heads attention: shared identity-initialised D×D transforms of every head's q, k, v"
    kv_heads = "axis"
    implementations = {
        (backend, phase): make(backend)
        for backend in IMPLEMENTED_BACKENDS
        for phase, make in (("prefill", _prefill), ("decode", _decode))
    }
    train_backends = IMPLEMENTED_BACKENDS

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        d = trial.head_dim
        return [
            *qkv_specs(trial),
            *(Weight(f"t_{name}", (d, d), init="identity") for name in ("q", "k", "v")),
        ]

    def cost(self, trial: Trial) -> Cost:
        b, h, g, d = trial.batch, trial.n_heads, trial.n_kv_heads, trial.head_dim
        n_q = query_rows(trial)
        if trial.phase == "decode":
            heads_transformed, transforms_read = b * h * n_q, 1  # the new query only; T_q
        else:
            heads_transformed, transforms_read = b * (h + 2 * g) * n_q, 3
        return with_extra(
            grouped_attention_cost(trial, self.n_params(trial)),
            trial,
            flops=2.0 * heads_transformed * d * d,
            elements=transforms_read * d * d,
        )


VARIANT = KnockingHeadsAttention()
