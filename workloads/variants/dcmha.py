"""Dynamically composable multi-head attention (DCMHA, Xiao et al. 2024): heads mixed inside attention.

q, k, v [B, H, N, D] (MHA). The scores A = q kᵀ / sqrt(D) [B, H, N, N] are composed across heads before
the softmax, and the probabilities P again after it, each stage s with its own tensors:

    C(A)[h', i, j] = A[h', i, j] + Σ_h A[h, i, j] W_s[h, h']                         static  W [H, H]
                   + Σ_h Σ_r A[h, i, j] w1_q[i, h, r] w2_q[i, r, h']      query-wise  w1 [B, N, H, R],
                   + Σ_h Σ_r A[h, i, j] w1_k[j, h, r] w2_k[j, r, h']      key-wise    w2 [B, N, R, H]
                   + tanh(dd_q[i, h']) A[h', i, j] + tanh(dd_k[j, h']) A[h', i, j]     dd [B, N, H]

    P = softmax(mask_-inf(C_pre(A)))   o = mask_0(C_post(P)) v                        o [B, H, N, D]

The dynamic tensors are projections of each token's x (the paper computes them with a small MLP; a
linear map keeps the same shapes and math); W starts at zero, so the layer starts as MHA. The causal mask
follows the pre-softmax composition; after the post-softmax one, masked entries are set to 0 again (every
term is linear in P at the same (i, j), so they already are; the mask states it). The composition needs
every head of a (query, key) tile together. The measured op covers the scores, both compositions, the
softmax and P·v. Prefill only: decode would cache the key-wise tensors of every past token besides K/V.
"""

import math

import torch

from workloads.reference import reference_chunk
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, TokenInput, Variant, Weight
from workloads.variants.gqa import grouped_attention_cost, qkv_specs
from workloads.variants.routing import query_rows, scored_pairs, with_extra

STAGES = ("pre", "post")  # before and after the softmax
SIDES = {"q": "i", "k": "j"}  # query-wise tensors follow the score row i, key-wise ones its column j
QUERY_WISE = ("w1", "w2", "gate")  # the tensors `<stage>_q_<name>` [B, N, ...] of each score row


def compose(scores: torch.Tensor, x: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
    """scores [B, H, N, N] -> the same with stage `stage`'s head composition added (einsum, no head loop)."""
    dtype = scores.dtype

    def tensor(name: str) -> torch.Tensor:
        return x[f"{stage}_{name}"].to(dtype)

    out = scores + torch.einsum("bhij,hg->bgij", scores, tensor("static"))
    for side, pos in SIDES.items():
        # Down to R per (i, j), then back up to H: [B, R, N, N] instead of an [H, H] map per token.
        low = torch.einsum(f"bhij,b{pos}hr->brij", scores, tensor(f"{side}_w1"))
        out = out + torch.einsum(f"brij,b{pos}rg->bgij", low, tensor(f"{side}_w2"))
        out = out + torch.einsum(f"bhij,b{pos}h->bhij", scores, torch.tanh(tensor(f"{side}_gate")))
    return out


def _attend_rows(trial: Trial, x: dict[str, torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Output rows start:stop [B, H, n, D]. The composition at (i, j) reads row i's query-wise and key
    j's key-wise tensors and the softmax runs over keys: rows are independent, so chunks of rows are the
    same math."""
    q, k = x["q"][:, :, start:stop], x["k"]  # [B, H, n, D], [B, H, N, D]
    part = dict(x)
    for stage in STAGES:
        for name in QUERY_WISE:  # [B, N, ...] -> these rows' [B, n, ...]
            part[f"{stage}_q_{name}"] = x[f"{stage}_q_{name}"][:, start:stop]
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, n, N]
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    visible = None
    if trial.causal:  # self-attention (Nq == Nk): query i sees keys j <= i
        positions = torch.arange(k.shape[2], device=q.device)  # [N]
        visible = positions[None, :] <= positions[start:stop, None]  # [n, N]
    scores = compose(scores, part, "pre")
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    probs = compose(torch.softmax(scores, dim=-1), part, "post")
    if visible is not None:
        probs = probs.masked_fill(~visible, 0.0)
    return probs.to(x["v"].dtype) @ x["v"]


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return _attend_rows(trial, x, 0, x["q"].shape[2])


def _chunked_reference(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """`_torch_ref` with queries in chunks: the [B, H, chunk, N] scores of one chunk at a time."""
    batch, n_heads, n = x["q"].shape[:3]
    chunk = reference_chunk(batch * n_heads * n)
    outputs = [_attend_rows(trial, x, start, min(start + chunk, n)) for start in range(0, n, chunk)]
    return torch.cat(outputs, dim=2)  # [B, H, N, D]


class DynamicallyComposableAttention(Variant):
    name = "dcmha"
    summary = "DCMHA: scores and probabilities composed across heads (static + input-dependent low rank)"
    param_defaults = {"rank": 2}
    kv_heads = "n_heads"
    flex_limit = (
        "it mixes scores and probabilities across heads, and a score_mod sees one head's score at a time"
    )
    implementations = {("torch-ref", "prefill"): _torch_ref}

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return _chunked_reference(trial, inputs)

    def validate_params(self, params: dict) -> None:
        if params["rank"] < 1:
            raise ValueError(f"rank: {params['rank']} must be at least 1")

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        h, r = trial.n_heads, trial.param_dict["rank"]
        specs: list[InputSpec] = [*qkv_specs(trial)]
        for stage in STAGES:
            specs.append(Weight(f"{stage}_static", (h, h), init="zeros"))
            for side in SIDES:
                specs += [
                    TokenInput(f"{stage}_{side}_w1", (h, r), heads_first=False),
                    TokenInput(f"{stage}_{side}_w2", (r, h), heads_first=False),
                    TokenInput(f"{stage}_{side}_gate", (h,), heads_first=False),
                ]
        return specs

    def cost(self, trial: Trial) -> Cost:
        b, h, n, r = trial.batch, trial.n_heads, trial.seq_len, trial.param_dict["rank"]
        # Per stage and scored (i, j): H×H static mix, two rank-R round trips (down and up), two gates
        # (a multiply each) and five adds per head.
        per_pair = 2 * h * h + 2 * (2 * h * r + 2 * r * h) + 2 * h + 5 * h
        compose_flops = len(STAGES) * b * scored_pairs(trial) * per_pair
        # Per stage: each query row's and each key's w1, w2 and gate; the static [H, H].
        tensors = len(STAGES) * (b * (query_rows(trial) + n) * (2 * h * r + h) + h * h)
        return with_extra(
            grouped_attention_cost(trial, self.n_params(trial)), trial, flops=compose_flops, elements=tensors
        )


VARIANT = DynamicallyComposableAttention()
