"""Plain PyTorch attention, the math every variant's reference and the `torch-ref` backend build on.

Everything here is differentiable (the quality workloads train through it) and runs in any dtype;
the references call it in float64 on the CPU.
"""

import math

import torch

WEIGHTINGS = ("softmax", "cog", "relu")


def _window_per_kv_head(window: int | torch.Tensor | None, n_kv_heads: int, device) -> torch.Tensor | None:
    """[Hkv] int64 window sizes (<= 0: that head sees its whole causal past), or None."""
    if window is None:
        return None
    if isinstance(window, int):
        return torch.full((n_kv_heads,), window, dtype=torch.int64, device=device)
    return window.to(device=device, dtype=torch.int64)


def visible_keys(
    batch: int,
    n_kv_heads: int,
    query_rows: torch.Tensor,
    n_q: int,
    n_k: int,
    *,
    causal: bool,
    kv_lengths: torch.Tensor | None = None,
    window: int | torch.Tensor | None = None,
    sink: int = 0,
) -> torch.Tensor:
    """Which keys each query may see: bool [B, Hkv, 1, n, Nk] for the query rows `query_rows` [n].

    A query's position is aligned bottom-right to its sequence: p = i + L - Nq with L the sequence's
    length (kv_lengths[b], else Nk). Causal: keys j <= p. Keys j >= L are never seen. A window W > 0
    of KV head g keeps only the W most recent keys (p - W < j <= p) plus the first `sink` keys
    (streaming heads); W <= 0 leaves the head's keys alone (retrieval heads).
    """
    device = query_rows.device
    key_pos = torch.arange(n_k, device=device)  # [Nk]
    lengths = (
        torch.full((batch,), n_k, device=device, dtype=torch.int64)
        if kv_lengths is None
        else kv_lengths.to(device=device, dtype=torch.int64)
    )
    query_pos = query_rows[None, :] + (lengths[:, None] - n_q)  # [B, n]
    allowed = key_pos[None, None, :] < lengths[:, None, None]  # [B, 1, Nk]
    if causal:
        allowed = allowed & (key_pos[None, None, :] <= query_pos[:, :, None])  # [B, n, Nk]
    allowed = allowed.expand(batch, len(query_rows), n_k)[:, None, None]  # [B, 1, 1, n, Nk]
    windows = _window_per_kv_head(window, n_kv_heads, device)
    if windows is not None:
        recent = key_pos[None, None, :] > (query_pos[:, None, :, None] - windows[None, :, None, None])
        keep = recent | (key_pos < sink) | (windows <= 0)[None, :, None, None]  # [B, Hkv, n, Nk]
        allowed = allowed & keep[:, :, None]
    return allowed


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    kv_lengths: torch.Tensor | None = None,
    window: int | torch.Tensor | None = None,
    sink: int = 0,
    mask: torch.Tensor | None = None,
    weighting: str = "softmax",
    query_chunk: int | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """weights(q kᵀ · scale) v with grouped heads, by plain matmuls.

    q [B, Hq, Nq, Dk], k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv], Hq % Hkv == 0: query head h reads
    KV head h // (Hq // Hkv), by broadcasting (no copy of K/V). Which keys a query sees is
    `visible_keys` (causal, kv_lengths, per-KV-head window and sink), further restricted by `mask`
    (bool, broadcastable to [B, Hq, Nq, Nk]). A query that sees no key gets a zero output.

    weighting: "softmax"; "cog" (sign(s)·softmax(|s|): negative weights, Cog attention); "relu"
    (relu(s), unnormalised, as ReLA). Weights are computed in float32 at least. `query_chunk` bounds
    the [.., Nq, Nk] score tensor by processing queries in chunks (same math). `return_lse` also
    returns the natural-log sum of exp(s) over the visible keys [B, Hq, Nq] (-inf where none).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
    batch, n_q_heads, n_q, d_k = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    group = n_q_heads // n_kv_heads
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    q_grouped = q.view(batch, n_kv_heads, group, n_q, d_k)  # [B, G, R, Nq, Dk]
    k_grouped, v_grouped = k.unsqueeze(2), v.unsqueeze(2)  # [B, G, 1, Nk, D]
    if mask is not None:
        mask = mask.expand(batch, n_q_heads, n_q, n_k).reshape(batch, n_kv_heads, group, n_q, n_k)
    chunk = query_chunk or n_q
    outputs, lses = [], []
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        scores = (q_grouped[:, :, :, start:stop] @ k_grouped.transpose(-1, -2)) * scale  # [B, G, R, n, Nk]
        rows = torch.arange(start, stop, device=q.device)
        allowed = visible_keys(
            batch, n_kv_heads, rows, n_q, n_k, causal=causal, kv_lengths=kv_lengths, window=window, sink=sink
        )
        if mask is not None:
            allowed = allowed & mask[:, :, :, start:stop].to(q.device)
        allowed = allowed.expand(scores.shape)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        if weighting == "relu":
            probs = torch.relu(scores).masked_fill(~allowed, 0.0)
        else:
            magnitude = scores.abs() if weighting == "cog" else scores
            probs = torch.softmax(magnitude.masked_fill(~allowed, float("-inf")), dim=-1)
            probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # no key: 0, not NaN
            if weighting == "cog":
                probs = probs * torch.sign(scores)
        if return_lse:
            lses.append(torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), dim=-1))
        outputs.append(probs.to(v.dtype) @ v_grouped)  # [B, G, R, n, Dv]
    out = torch.cat(outputs, dim=3).reshape(batch, n_q_heads, n_q, v.shape[-1])
    if return_lse:
        return out, torch.cat(lses, dim=3).reshape(batch, n_q_heads, n_q)
    return out
