"""SwitchHead (Csordás et al. 2023): few attention heads whose value and output projections are MoEs.

x [B, N, M] (M = d_model), q, k [B, H, N, D] projected as usual; per head h, E experts
W_v [H, E, M, D] and W_o [H, E, D, M]; gate logits gv, go [B, N, H, E]. With the top_k experts of each
(token, head) by logit and sigmoid gates (not renormalised):

    v[h, j]  = Σ_{e in topk(gv[j, h])} σ(gv[j, h, e]) · x_j W_v[h, e]       source token j   [B, H, N, D]
    o[h, i]  = softmax(q_h,i k_hᵀ / sqrt(D)) v_h                                             [B, H, N, D]
    y_i      = Σ_h Σ_{e in topk(go[i, h])} σ(go[i, h, e]) · o[h, i] W_o[h, e]  destination i  [B, N, M]

The output projection is part of the variant's math, so the op ends in d_model (`output_projection` is
False) and covers the value experts, the attention and the output experts. The reference applies every
expert and zeroes the unpicked gates; the cost model counts top_k experts per (token, head).

Decode is not offered: its cache would hold each past token's mixed value v[h, j] (made from x_j by
the value experts when that token was generated), which no projection of the layer produces, and what
is left per new token is MHA decode plus the two expert mixes of one token, nothing the prefill does
not already measure. The cost model still states decode (k and mixed v cached per head).
"""

import torch

from workloads.flex import causal_mask, flex
from workloads.reference import attention
from workloads.trial import Trial
from workloads.variants.base import (
    Cost,
    InputSpec,
    TokenInput,
    Variant,
    Weight,
    attention_flops,
    d_model_of,
    dtype_size,
)
from workloads.variants.routing import query_rows, top_k_gates


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return _experts_around(trial, x, lambda q, k, v: attention(q, k, v, causal=trial.causal))


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return flex(q, k, v, causal_mask(q.shape[2], k.shape[2], q.device) if trial.causal else None)

    return _experts_around(trial, x, attend)


def _experts_around(trial: Trial, x: dict[str, torch.Tensor], attend) -> torch.Tensor:
    """The value experts, `attend`(q, k, mixed values) -> [B, H, N, D], then the output experts."""
    top_k = trial.param_dict["top_k"]
    v_gates = top_k_gates(x["v_gate_logits"], top_k, "sigmoid")  # [B, N, H, E]
    o_gates = top_k_gates(x["o_gate_logits"], top_k, "sigmoid")
    # Every expert's value of every token, then the gated sum over experts: [B, N, H, E, D] -> [B, H, N, D]
    expert_values = torch.einsum("bnm,hemd->bnhed", x["x"], x["v_experts"])
    values = torch.einsum("bnhe,bnhed->bhnd", v_gates, expert_values)
    out = attend(x["q"], x["k"], values)  # [B, H, N, D]
    # Gate each head's output per expert, then one contraction over (head, expert, D): [B, N, M]
    gated = torch.einsum("bnhe,bhnd->bnhed", o_gates, out)
    return torch.einsum("bnhed,hedm->bnm", gated, x["o_experts"])


class SwitchHead(Variant):
    name = "switchhead"
    summary = (
        "SwitchHead: few heads, value and output projections as top-k mixtures of experts (sigmoid gates)"
    )
    param_defaults = {"experts": 4, "top_k": 2}
    kv_heads = "n_heads"
    output_projection = False
    maskable_heads = False  # its output experts sum over heads inside the forward
    implementations = {("torch-ref", "prefill"): _torch_ref, ("flex", "prefill"): _flex}

    def validate_params(self, params: dict) -> None:
        if params["experts"] < 1:
            raise ValueError(f"experts: {params['experts']} must be at least 1")
        if not 1 <= params["top_k"] <= params["experts"]:
            raise ValueError(f"top_k: {params['top_k']} must be in [1, experts={params['experts']}]")

    def output_features(self, trial: Trial) -> int:
        return d_model_of(trial)

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        h, d, m, e = trial.n_heads, trial.head_dim, d_model_of(trial), trial.param_dict["experts"]
        return [
            TokenInput("x", (m,), heads_first=False, project=False),
            TokenInput("q", (h, d)),
            TokenInput("k", (h, d), cached=True),
            TokenInput("v_gate_logits", (h, e), heads_first=False),
            TokenInput("o_gate_logits", (h, e), heads_first=False),
            Weight("v_experts", (h, e, m, d)),
            Weight("o_experts", (h, e, d, m)),
        ]

    def cost(self, trial: Trial) -> Cost:
        b, h, n, d, m = trial.batch, trial.n_heads, trial.seq_len, trial.head_dim, d_model_of(trial)
        experts, top_k = trial.param_dict["experts"], trial.param_dict["top_k"]
        n_q = query_rows(trial)  # decode: the new token's value and output only; past values are cached
        expert_flops = 2.0 * 2 * b * n_q * h * top_k * m * d  # value and output mixes of the picked experts
        flops = attention_flops(b, h, n_q, n, d, d, trial.causal) + expert_flops
        kv_read = b * h * n * d * (2 if trial.phase == "decode" else 1)  # k; in decode the mixed-v cache too
        elements = (
            2 * b * n_q * m  # x read, y written
            + b * h * n_q * d  # q
            + kv_read
            + 2 * b * n_q * h * experts  # both gate logits
            + h * min(experts, b * n_q * top_k) * 2 * m * d  # each expert's W_v, W_o read once if picked
        )
        size = dtype_size(trial.dtype)
        return Cost(
            flops=flops,
            bytes_moved=float(elements * size),
            n_params=self.n_params(trial),
            kv_bytes_per_token=2 * h * d * size,
        )


VARIANT = SwitchHead()
