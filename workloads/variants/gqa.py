"""Grouped-query attention (Ainslie et al. 2023): G KV heads, query head h reads KV head h // (H/G).

MHA (G = H) and MQA (G = 1) are the same math with the KV-head axis fixed (mha.py, mqa.py).
Inputs are the projected heads; the cost model also counts the layer's projections as parameters.
"""

import torch
import torch.nn.functional as F

from workloads.backends import IMPLEMENTED_BACKENDS, load_kernels
from workloads.flex import causal_mask, flex
from workloads.reference import attention, reference_chunk
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, TokenInput, Variant, dtype_size, mean_keys_per_query


def phase_attention(trial: Trial, x: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    """`reference.attention` over the phase's inputs: q, k, v [B, H|G, N, D] in prefill and train;
    in decode the new token q [B, H, D] against its cache (k_cache, v_cache, cache_seqlens), returned
    with the query axis kept ([B, H, 1, Dv]). kwargs: weighting, window, sink, query_chunk, ..."""
    if trial.phase == "decode":
        return attention(
            x["q"][:, :, None], x["k_cache"], x["v_cache"], kv_lengths=x["cache_seqlens"], **kwargs
        )
    return attention(x["q"], x["k"], x["v"], causal=trial.causal, **kwargs)


def reference_query_chunk(trial: Trial, x: dict[str, torch.Tensor]) -> int:
    """Queries per chunk of a chunked reference over the phase's inputs (`phase_attention`): its scores
    [B, H, chunk, Nk] hold at most REFERENCE_CHUNK_ELEMENTS."""
    keys = x["k_cache"] if trial.phase == "decode" else x["k"]  # [B, G, Nk, D]
    return reference_chunk(keys.shape[0] * x["q"].shape[1] * keys.shape[2])


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor], query_chunk: int | None = None) -> torch.Tensor:
    out = phase_attention(trial, x, query_chunk=query_chunk)
    return out[:, :, 0] if trial.phase == "decode" else out


def _torch_sdpa(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    if trial.phase == "decode":
        # A mask would move SDPA off its fastest kernels, so it gets one only for ragged caches.
        out = F.scaled_dot_product_attention(
            x["q"][:, :, None], x["k_cache"], x["v_cache"], attn_mask=x.get("filled_mask"), enable_gqa=True
        )
        return out[:, :, 0]
    # Prefill is self-attention (Nq == Nk), where SDPA's top-left causal alignment is the same as ours.
    return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=trial.causal, enable_gqa=True)


def flex_attention(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """FlexAttention over the phase's inputs (`phase_attention`'s): prefill causal as the trial says;
    decode over a full cache (the benchmarks' caches are full, so no mask), returned as [B, H, Dv]."""
    if trial.phase == "decode":
        return flex(x["q"][:, :, None], x["k_cache"], x["v_cache"])[:, :, 0]
    q, k = x["q"], x["k"]
    return flex(q, k, x["v"], causal_mask(q.shape[2], k.shape[2], q.device) if trial.causal else None)


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    kernels = load_kernels()
    if trial.phase == "decode":
        return kernels.decode_attention(x["q"], x["k_cache"], x["v_cache"], x["cache_seqlens"])
    return kernels.flash_attention(x["q"], x["k"], x["v"], causal=trial.causal)


class GroupedQueryAttention(Variant):
    implementations = {
        (backend, phase): impl
        for backend, impl in (
            ("torch-ref", _torch_ref),
            ("torch-sdpa", _torch_sdpa),
            ("flex", flex_attention),
            ("triton", _triton),
        )
        for phase in ("prefill", "decode")
    }
    train_backends = IMPLEMENTED_BACKENDS

    def __init__(self, name: str, summary: str, kv_heads: str = "axis"):
        """kv_heads: "axis" (the n_kv_heads axis is used), "n_heads" (MHA) or "one" (MQA)."""
        self.name = name
        self.summary = summary
        self.kv_heads = kv_heads

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # The torch-ref math, with queries in chunks so long sequences fit in memory.
        return _torch_ref(trial, inputs, query_chunk=reference_query_chunk(trial, inputs))

    def cost(self, trial: Trial) -> Cost:
        return grouped_attention_cost(trial, self.n_params(trial))


def qkv_specs(trial: Trial) -> list[InputSpec]:
    """q [B, H, N, D] for every query head; k, v [B, G, N, D] (cached in decode)."""
    h, g, d = trial.n_heads, trial.n_kv_heads, trial.head_dim
    return [
        TokenInput("q", (h, d)),
        TokenInput("k", (g, d), cached=True),
        TokenInput("v", (g, d), cached=True),
    ]


def grouped_attention_cost(
    trial: Trial,
    n_params: int,
    *,
    mean_keys: float | None = None,
    kv_tokens_read: float | None = None,
    query_share: float = 1.0,
    kv_heads_cached: int | None = None,
) -> Cost:
    """Cost of attention over q [B, H, N, D], k, v [B, G, N, D].

    mean_keys: keys each query attends to in prefill (default: what the causal mask leaves);
    kv_tokens_read: cached tokens read per KV head in decode (default: the whole cache);
    query_share: share of the (token, head) pairs computed (routing, pruning);
    kv_heads_cached: KV heads in the decode cache (default G).
    """
    b, h, g, n, d = trial.batch, trial.n_heads, trial.n_kv_heads, trial.seq_len, trial.head_dim
    size = dtype_size(trial.dtype)
    if trial.phase == "decode":
        keys = n if kv_tokens_read is None else kv_tokens_read
        flops = 2.0 * b * h * keys * 2 * d * query_share
        elements = 2 * b * h * d * query_share + 2 * b * g * keys * d  # q and o; the K/V cache actually read
    else:
        keys = mean_keys_per_query(n, n, trial.causal) if mean_keys is None else mean_keys
        flops = 2.0 * b * h * n * keys * 2 * d * query_share
        elements = 2 * b * h * n * d * query_share + 2 * b * g * n * d  # q, o; k, v
    cached = g if kv_heads_cached is None else kv_heads_cached
    return Cost(
        flops=flops,
        bytes_moved=float(elements * size),
        n_params=n_params,
        kv_bytes_per_token=2 * cached * d * size,
    )


VARIANT = GroupedQueryAttention(
    "gqa", "grouped-query attention: n_kv_heads KV heads shared by groups of query heads"
)
