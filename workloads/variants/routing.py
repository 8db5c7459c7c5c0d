"""Math shared by several variants of this package: top-k expert gates, dense score matrices, cost extras.

Top-k gating (MoA's heads, SwitchHead's value and output experts) picks experts by their logits, so a
float32 run and its float64 reference pick the same experts from the same inputs, and returns dense
gates (0 for an expert not picked) that carry the gradient to the picked logits.
"""

import math
from dataclasses import replace

import torch

from workloads.trial import Trial
from workloads.variants.base import Cost, dtype_size, mean_keys_per_query

GATE_KINDS = ("softmax", "sigmoid")


def top_k_gates(logits: torch.Tensor, top_k: int, kind: str) -> torch.Tensor:
    """logits [..., E] -> gates [..., E]: the top_k experts by logit get a weight, the others 0.

    kind "softmax": softmax over all E renormalised over the top-k, i.e. a softmax over the picked logits
    (MoA); "sigmoid": σ(logit), not renormalised (SwitchHead). Computed in float32 at least.
    """
    if kind not in GATE_KINDS:
        raise ValueError(f"gate kind {kind!r} is not one of {GATE_KINDS}")
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked, experts = wide.topk(top_k, dim=-1)  # [..., top_k]
    weights = torch.softmax(picked, dim=-1) if kind == "softmax" else torch.sigmoid(picked)
    return torch.zeros_like(wide).scatter(-1, experts, weights).to(logits.dtype)


def gated_heads(out: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """out [B, H, N, D] · gates [B, N, H] per (token, head); decode: [B, H, D] · [B, H]."""
    if out.dim() == 3:
        return out * gates[..., None]
    return out * gates.transpose(1, 2)[..., None]


def self_attention_scores(
    q: torch.Tensor, k: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k [B, H, N, D] -> (scaled scores [B, H, N, N] in float32 at least, visible keys bool [N, N] or
    None when every key is visible). For variants that transform the whole score matrix across heads or
    positions, which the fused attention of `workloads.reference` does not expose."""
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if not causal:
        return scores, None
    n = q.shape[2]
    return scores, torch.ones(n, n, dtype=torch.bool, device=q.device).tril()  # self-attention: Nq == Nk


def query_rows(trial: Trial) -> int:
    """Queries one pass computes per (batch, head): the new token in decode, every token otherwise."""
    return 1 if trial.phase == "decode" else trial.seq_len


def scored_pairs(trial: Trial) -> float:
    """(query, key) pairs one head scores per batch element, as an efficient kernel skips masked ones."""
    n_q = query_rows(trial)
    return n_q * mean_keys_per_query(n_q, trial.seq_len, trial.causal)


def with_extra(cost: Cost, trial: Trial, *, flops: float = 0.0, elements: float = 0.0) -> Cost:
    """`cost` plus the FLOPs and the elements read or written (of the trial's dtype) that a variant adds."""
    return replace(
        cost,
        flops=cost.flops + flops,
        bytes_moved=cost.bytes_moved + elements * dtype_size(trial.dtype),
    )
