"""Multi-token attention (MTA, Golovneva et al. 2025): scores convolved over (query, key), heads mixed.

q, k, v [B, H, N, D] (MHA, causal). Per head h, a kernel θ_h [c_q, c_k] runs over the scaled score
matrix, causally over queries (offsets 0..c_q-1 into the past) and centred over keys; masked scores are
0 before the convolution and -inf after it, as in the paper:

    S  = mask_0(q kᵀ / sqrt(D))                                                   [B, H, N, N]
    Ŝ[h, i, j] = Σ_{a < c_q} Σ_{|b| <= c_k//2} θ_h[a, c_k//2 + b] · S[h, i - a, j + b]
    P  = softmax(mask_-inf(Ŝ))
    P' = P mixed within groups of `head_group` heads: P'[c·g + o] = Σ_s M[c, o, s] P[c·g + s]
    o  = P' v                                                                     [B, H, N, D]

θ starts as the identity kernel (1 at query offset 0, key offset 0) and M as identity, so the layer
starts as MHA. θ is stored as its difference from the identity kernel (Weight "score_kernel", init
zeros), because the base's initial weights are normal, identity (eye), zeros or ones and none of them is
a single centred 1. The measured op covers the scores, the convolution (F.conv2d, groups=H), the
softmax, the head mixing and P'·v. Prefill only: decode would need the last c_q query rows of scores.
"""

import torch
import torch.nn.functional as F

from workloads.reference import reference_chunk
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, Variant, Weight
from workloads.variants.gqa import grouped_attention_cost, qkv_specs
from workloads.variants.routing import scored_pairs, self_attention_scores, with_extra


def effective_kernel(stored: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """θ [H, c_q, c_k] from its stored difference to the identity kernel (1 at query offset 0, key
    offset 0: the centre column), in the scores' dtype so a bf16 weight does not round 1 + small."""
    kernel = stored.to(dtype).clone()
    kernel[:, 0, stored.shape[-1] // 2] += 1.0
    return kernel


def convolved_scores(scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """scores [B, H, N, N] (masked ones 0), kernel θ [H, c_q, c_k] -> [B, H, N, N]."""
    n_heads, query_kernel, key_kernel = kernel.shape
    # conv2d correlates: padding c_q - 1 rows above makes output row i read rows i - c_q + 1 .. i, so
    # kernel row a (offset a into the past) sits at c_q - 1 - a: flip the query axis. Keys pad both sides.
    padded = F.pad(scores, (key_kernel // 2, key_kernel - 1 - key_kernel // 2, query_kernel - 1, 0))
    weight = kernel.flip(1)[:, None].to(scores.dtype)  # [H, 1, c_q, c_k]: one filter per head
    return F.conv2d(padded, weight, groups=n_heads)


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    params = trial.param_dict
    scores, visible = self_attention_scores(x["q"], x["k"], causal=True)  # [B, H, N, N], [N, N]
    kernel = effective_kernel(x["score_kernel"], scores.dtype)
    scores = convolved_scores(scores.masked_fill(~visible, 0.0), kernel)
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    batch, n_heads, n, _ = probs.shape
    group = params["head_group"]
    grouped = probs.view(batch, n_heads // group, group, n, n)  # [B, H/g, g, N, N]
    mixed = torch.einsum("cos,bcsij->bcoij", x["head_mix"].to(probs.dtype), grouped)
    return mixed.reshape(batch, n_heads, n, n).to(x["v"].dtype) @ x["v"]


def _chunked_reference(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """`_torch_ref` over chunks of whole head groups: the convolution is per head and the mixing within a
    group of `head_group` heads, so each chunk's [B, h, N, N] scores are the same math. A chunk holds as
    many groups as REFERENCE_CHUNK_ELEMENTS allows, at least one."""
    batch, n_heads, n = x["q"].shape[:3]
    group = trial.param_dict["head_group"]
    heads = group * reference_chunk(batch * group * n * n)  # query heads per chunk
    outputs = []
    for start in range(0, n_heads, heads):
        part = {name: x[name][:, start : start + heads] for name in ("q", "k", "v")}  # [B, h, N, D]
        part["score_kernel"] = x["score_kernel"][start : start + heads]  # [h, c_q, c_k]
        part["head_mix"] = x["head_mix"][start // group : (start + heads) // group]  # [h / g, g, g]
        outputs.append(_torch_ref(trial, part))
    return torch.cat(outputs, dim=1)  # [B, H, N, D]


class MultiTokenAttention(Variant):
    name = "mta"
    summary = "multi-token attention: per-head 2-D convolution of the scores over (query, key), head mixing"
    param_defaults = {"query_kernel": 6, "key_kernel": 11, "head_group": 2}
    smoke_params = {"query_kernel": 3, "key_kernel": 5}
    kv_heads = "n_heads"
    flex_limit = (
        "it convolves scores over neighbouring queries and keys and mixes heads, "
        "and a score_mod sees one score at a time"
    )
    implementations = {("torch-ref", "prefill"): _torch_ref}

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return _chunked_reference(trial, inputs)

    def validate_params(self, params: dict) -> None:
        for key in ("query_kernel", "key_kernel", "head_group"):
            if params[key] < 1:
                raise ValueError(f"{key}: {params[key]} must be at least 1")
        if params["key_kernel"] % 2 == 0:
            raise ValueError(
                f"key_kernel: {params['key_kernel']} must be odd (the kernel is centred on the key)"
            )

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        if not point["causal"]:
            raise InvalidPoint("causal", "mta is causal only (its convolution looks at past queries)")
        group = self.point_params(point)["head_group"]
        if point["n_heads"] % group:
            raise InvalidPoint(
                "n_heads", f"n_heads={point['n_heads']} is not divisible by head_group={group}"
            )
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        params, h = trial.param_dict, trial.n_heads
        group = params["head_group"]
        return [
            *qkv_specs(trial),
            Weight("score_kernel", (h, params["query_kernel"], params["key_kernel"]), init="zeros"),
            Weight("head_mix", (h // group, group, group), init="identity"),
        ]

    def cost(self, trial: Trial) -> Cost:
        params, h = trial.param_dict, trial.n_heads
        taps, group = params["query_kernel"] * params["key_kernel"], params["head_group"]
        # Per head and scored (i, j): a multiply-add per kernel tap, and per mixed-in head.
        extra_flops = trial.batch * h * scored_pairs(trial) * 2 * (taps + group)
        return with_extra(
            grouped_attention_cost(trial, self.n_params(trial)),
            trial,
            flops=extra_flops,
            elements=h * taps + h * group,
        )


VARIANT = MultiTokenAttention()
