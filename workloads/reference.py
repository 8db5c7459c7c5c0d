"""Plain PyTorch attention, the math every variant's reference and the `torch-ref` backend build on."""

import math

import torch


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    kv_lengths: torch.Tensor | None = None,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v with grouped heads, by plain matmuls.

    q [B, Hq, Nq, Dk], k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv], Hq % Hkv == 0: query head h reads
    KV head h // (Hq // Hkv), by broadcasting (no copy of K/V). Causal masks align bottom-right
    (query i sees keys j <= i + Nk - Nq). kv_lengths [B] masks keys j >= kv_lengths[b]. A query
    that sees no key gets a zero output. Softmax runs in float32 at least. `query_chunk` bounds
    the [.., Nq, Nk] score tensor by processing queries in chunks (same math).
    """
    batch, n_q_heads, n_q, d_k = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    group = n_q_heads // n_kv_heads
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    q_grouped = q.view(batch, n_kv_heads, group, n_q, d_k)  # [B, G, R, Nq, Dk]
    k_grouped, v_grouped = k.unsqueeze(2), v.unsqueeze(2)  # [B, G, 1, Nk, D]
    key_pos = torch.arange(n_k, device=q.device)
    chunk = query_chunk or n_q
    outputs = []
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        scores = (q_grouped[:, :, :, start:stop] @ k_grouped.transpose(-1, -2)) * scale  # [B, G, R, n, Nk]
        allowed = torch.ones(stop - start, n_k, dtype=torch.bool, device=q.device)  # [n, Nk]
        if causal:
            query_pos = torch.arange(start, stop, device=q.device) + (n_k - n_q)
            allowed = key_pos[None, :] <= query_pos[:, None]
        allowed = allowed.expand(batch, 1, 1, stop - start, n_k)
        if kv_lengths is not None:
            in_cache = key_pos[None, :] < kv_lengths.to(q.device)[:, None]  # [B, Nk]
            allowed = allowed & in_cache[:, None, None, None, :]
        softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
        scores = scores.to(softmax_dtype).masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # rows with no key: 0, not NaN
        outputs.append(probs.to(v.dtype) @ v_grouped)  # [B, G, R, n, Dv]
    out = torch.cat(outputs, dim=3)
    return out.reshape(batch, n_q_heads, n_q, v.shape[-1])
