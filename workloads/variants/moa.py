"""Mixture of attention heads (MoA, Zhang et al. 2022): E = n_heads query experts over one shared K/V head.

Each expert e has its own query projection (q [B, E, N, D]) and its own output projection (the layer's
W_O, column block e); all share one key/value head k, v [B, 1, N, D]. Router logits r [B, N, E] pick
the top_k experts of each token:

    gate[b, i, :] = softmax(r[b, i]) kept on the top_k experts, renormalised over them (0 elsewhere)
    o[b, e, i]    = gate[b, i, e] · softmax(q_e,i kᵀ / sqrt(D)) v                        [B, E, N, D]

so y_i = Σ_{e in top_k(i)} gate · o_e W_O,e. With top_k = 1 the renormalised gate is always 1, so the
router gets no gradient (a consequence of the renormalisation). The measured op covers the routing
(top-k, gates) and the attention; the reference computes every expert and zeroes the unpicked ones,
while the cost model counts what an expert-sparse implementation does: top_k experts per token (FLOPs,
and q, o of those only). Decode gates the new token by its own router logits [B, E] and reads a
one-head (MQA) cache.
"""

import torch

from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, TokenInput, Variant
from workloads.variants.gqa import flex_attention, grouped_attention_cost, phase_attention, qkv_specs
from workloads.variants.routing import gated_heads, query_rows, top_k_gates, with_extra


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    gates = top_k_gates(x["router_logits"], trial.param_dict["top_k"], "softmax")  # [B, N, E] or [B, E]
    out = phase_attention(trial, x)
    return gated_heads(out[:, :, 0] if trial.phase == "decode" else out, gates)


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every expert's attention over the shared K/V head by FlexAttention (MQA natively), then gated."""
    gates = top_k_gates(x["router_logits"], trial.param_dict["top_k"], "softmax")
    return gated_heads(flex_attention(trial, x), gates)


class MixtureOfAttentionHeads(Variant):
    name = "moa"
    summary = (
        "mixture of attention heads: top-k of n_heads query/output experts per token, one shared K/V head"
    )
    param_defaults = {"top_k": 2}
    kv_heads = "one"
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
        ("flex", "prefill"): _flex,
        ("flex", "decode"): _flex,
    }

    def validate_params(self, params: dict) -> None:
        if params["top_k"] < 1:
            raise ValueError(f"top_k: {params['top_k']} must be at least 1")

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        top_k = self.point_params(point)["top_k"]
        if top_k > point["n_heads"]:
            raise InvalidPoint("n_heads", f"n_heads={point['n_heads']} experts are fewer than top_k={top_k}")
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return [*qkv_specs(trial), TokenInput("router_logits", (trial.n_heads,), heads_first=False)]

    def cost(self, trial: Trial) -> Cost:
        share = trial.param_dict["top_k"] / trial.n_heads
        router_elements = trial.batch * query_rows(trial) * trial.n_heads
        return with_extra(
            grouped_attention_cost(trial, self.n_params(trial), query_share=share),
            trial,
            elements=router_elements,
        )


VARIANT = MixtureOfAttentionHeads()
