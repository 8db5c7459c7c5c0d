"""Mixture of Block Attention (MoBA, Lu et al. 2025): each query attends to a few blocks of keys.

Keys are cut into blocks of `block_size`. For query i (its own block m = i // block_size) and each
earlier block, the gate is ⟨q_i, mean of the block's keys⟩; the query attends, causally, to its own
block (always) and to the top_k - 1 earlier blocks with the highest gates (future blocks never).
Gating is per query head (keys shared per KV head, GQA); selection is not differentiable, attention over
the selected blocks is. The op covers the gating (mean pooling, gate scores, top-k) and the attention.
"""

import math

import torch
import torch.nn.functional as F

from workloads.backends import load_kernels
from workloads.flex import flex, selected_blocks_mask
from workloads.reference import attention, reference_chunk
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, Variant, dtype_size
from workloads.variants.gqa import grouped_attention_cost, qkv_specs


@torch.no_grad()
def block_means(k: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean key of each block, in float32: k [B, G, Nk, D] -> [B, G, n_blocks, D]. The last block may be
    partial: its mean is over its keys."""
    batch, n_kv_heads, n_k, d = k.shape
    n_blocks = math.ceil(n_k / block_size)
    padded = F.pad(k.float(), (0, 0, 0, n_blocks * block_size - n_k))  # [B, G, nb·bs, D]
    counts = torch.clamp(n_k - torch.arange(n_blocks, device=k.device) * block_size, max=block_size)
    return padded.view(batch, n_kv_heads, n_blocks, block_size, d).sum(3) / counts[:, None]


@torch.no_grad()
def select_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    block_size: int,
    top_k: int,
    query_positions: torch.Tensor | None = None,
    means: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blocks each query attends to: bool [B, Hq, Nq, n_blocks].

    q [B, Hq, Nq, D], k [B, Hkv, Nk, D]; query_positions [Nq] (default: the last Nq positions of Nk,
    as in prefill (Nq = Nk) and decode (Nq = 1)); means: `block_means(k, block_size)` when the caller
    has them already (a chunked reference selects for one chunk of queries at a time).
    """
    batch, n_q_heads, n_q, d = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    means = block_means(k, block_size) if means is None else means  # [B, G, nb, D]
    n_blocks = means.shape[2]
    grouped = q.float().view(batch, n_kv_heads, n_q_heads // n_kv_heads, n_q, d)
    gates = (grouped @ means[:, :, None].transpose(-1, -2)).view(batch, n_q_heads, n_q, n_blocks)
    if query_positions is None:
        query_positions = torch.arange(n_k - n_q, n_k, device=q.device)
    own = (query_positions // block_size)[:, None]  # [Nq, 1]
    block = torch.arange(n_blocks, device=q.device)[None, :]  # [1, nb]
    gates = gates.masked_fill(block > own, float("-inf")).masked_fill(block == own, float("inf"))
    chosen = gates.topk(min(top_k, n_blocks), dim=-1).indices
    selected = torch.zeros_like(gates, dtype=torch.bool).scatter_(-1, chosen, True)
    return selected & (block <= own)  # top-k may have filled up with future blocks: drop them


def _key_mask(selected: torch.Tensor, block_size: int, n_k: int) -> torch.Tensor:
    """[B, H, Nq, n_blocks] -> [B, H, Nq, Nk]: each key inherits its block's selection."""
    return selected.repeat_interleave(block_size, dim=-1)[..., :n_k]


def _selection(trial: Trial, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    params = trial.param_dict
    return select_blocks(q, k, params["block_size"], params["top_k"])


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    if trial.phase == "decode":
        q, k, v = x["q"][:, :, None], x["k_cache"], x["v_cache"]
        mask = _key_mask(_selection(trial, q, k), trial.param_dict["block_size"], k.shape[2])
        return attention(q, k, v, mask=mask, kv_lengths=x["cache_seqlens"])[:, :, 0]
    mask = _key_mask(_selection(trial, x["q"], x["k"]), trial.param_dict["block_size"], x["k"].shape[2])
    return attention(x["q"], x["k"], x["v"], causal=True, mask=mask)


def _chunked_prefill(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """`_torch_ref`'s prefill with queries in chunks: each chunk selects its blocks and attends under its
    own key mask [B, H, n, N], so no N×N mask or score tensor exists. Causality is part of that mask:
    `attention` would align a chunk's queries to the last keys."""
    q, k, v = x["q"], x["k"], x["v"]  # [B, H, N, D], [B, G, N, D], [B, G, N, D]
    block_size, top_k = trial.param_dict["block_size"], trial.param_dict["top_k"]
    batch, n_heads, n = q.shape[:3]
    means = block_means(k, block_size)  # [B, G, n_blocks, D], once for every chunk
    key_pos = torch.arange(n, device=q.device)  # [N]
    chunk = reference_chunk(batch * n_heads * n)
    outputs = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=q.device)  # [n]
        q_rows = q[:, :, start : start + chunk]  # [B, H, n, D]
        selected = select_blocks(q_rows, k, block_size, top_k, query_positions=rows, means=means)
        mask = _key_mask(selected, block_size, n) & (key_pos[None, :] <= rows[:, None])  # [B, H, n, N]
        outputs.append(attention(q_rows, k, v, mask=mask))  # [B, H, n, D]
    return torch.cat(outputs, dim=2)


def _torch_sdpa(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense SDPA under the block mask (causality folded in): the baseline the kernel skips work against."""
    q, k = x["q"], x["k"]
    n = k.shape[2]
    mask = _key_mask(_selection(trial, q, k), trial.param_dict["block_size"], n)
    mask = mask & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, x["v"], attn_mask=mask, enable_gqa=True)


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """FlexAttention over the gated blocks: the selection becomes a block mask of the tiles that hold a
    chosen key (built per call: the choice depends on q and k), so Flex skips the others."""
    decode = trial.phase == "decode"
    q, k, v = (x["q"][:, :, None], x["k_cache"], x["v_cache"]) if decode else (x["q"], x["k"], x["v"])
    mask = selected_blocks_mask(_selection(trial, q, k), trial.param_dict["block_size"], k.shape[2])
    out = flex(q, k, v, mask)
    return out[:, :, 0] if decode else out


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    selected = _selection(trial, x["q"], x["k"])
    return load_kernels().moba_attention(
        x["q"], x["k"], x["v"], selected, block_size=trial.param_dict["block_size"]
    )


def moba_mean_keys(n: int, block_size: int, top_k: int) -> float:
    """Keys a query attends to on average: its own block up to itself, plus top_k - 1 earlier blocks."""
    total = 0
    for block_start in range(0, n, block_size):
        size = min(block_size, n - block_start)
        earlier = min(top_k - 1, block_start // block_size)
        total += size * (size + 1) // 2 + size * earlier * block_size
    return total / n


class MixtureOfBlockAttention(Variant):
    name = "moba"
    summary = "mixture of block attention: each query attends to its own block + top-k - 1 gated key blocks"
    param_defaults = {"block_size": 512, "top_k": 3}
    # Several blocks at N=40, so that the gate chooses some and skips others.
    smoke_params = {"block_size": 16, "top_k": 2}
    kv_heads = "axis"
    triton_kernels = {"prefill": ("moba_attention",)}
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
        ("torch-sdpa", "prefill"): _torch_sdpa,
        ("flex", "prefill"): _flex,
        ("flex", "decode"): _flex,
        ("triton", "prefill"): _triton,
    }

    def validate_params(self, params: dict) -> None:
        for key in ("block_size", "top_k"):
            if params[key] < 1:
                raise ValueError(f"{key}: {params[key]} must be at least 1")

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        if not point["causal"]:
            raise InvalidPoint("causal", "MoBA is causal (future blocks are never selected)")
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # The torch-ref math; prefill with queries in chunks so long sequences fit in memory.
        if trial.phase == "decode":
            return _torch_ref(trial, inputs)
        return _chunked_prefill(trial, inputs)

    def cost(self, trial: Trial) -> Cost:
        params = trial.param_dict
        b, h, g, n, d = trial.batch, trial.n_heads, trial.n_kv_heads, trial.seq_len, trial.head_dim
        n_blocks = math.ceil(n / params["block_size"])
        block_size = params["block_size"]
        if trial.phase == "decode":
            # The new token's own (partial) block plus up to top_k - 1 full earlier blocks.
            own = (n - 1) // block_size
            kv_tokens = (n - own * block_size) + min(params["top_k"] - 1, own) * block_size
            cost = grouped_attention_cost(trial, self.n_params(trial), kv_tokens_read=kv_tokens)
            gating = 2.0 * b * h * n_blocks * d + b * g * n * d
        else:
            keys = moba_mean_keys(n, params["block_size"], params["top_k"])
            cost = grouped_attention_cost(trial, self.n_params(trial), mean_keys=keys)
            gating = 2.0 * b * h * n * n_blocks * d + b * g * n * d  # gate scores; mean pooling
        # Mean pooling reads every key once (in decode too: block means are not cached here).
        pooling_bytes = b * g * n * d * dtype_size(trial.dtype) if trial.phase == "decode" else 0
        return Cost(
            flops=cost.flops + gating,
            bytes_moved=cost.bytes_moved + pooling_bytes,
            n_params=cost.n_params,
            kv_bytes_per_token=cost.kv_bytes_per_token,
        )


VARIANT = MixtureOfBlockAttention()
