"""Plain PyTorch attention, the math every variant's reference and the `torch-ref` backend build on.

Everything here is differentiable (the quality workloads train through it) and runs in any dtype;
the references call it in float64 on the CPU (float32 on a GPU), with queries in chunks of
`reference_chunk` so that a long sequence's reference fits in memory.
"""

import math

import torch

WEIGHTINGS = ("softmax", "cog", "relu")

# Elements of one chunk's [B, H, chunk, Nk] scores (or up-projected keys, ...) in the references that
# chunk their work (`reference_chunk`): 2**28 is 1 GiB in float32, 2 GiB in float64. A chunk's peak is a
# few such tensors (scores, weights, masks) whatever the sequence length.
REFERENCE_CHUNK_ELEMENTS = 2**28


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


def reference_chunk(elements_per_item: int) -> int:
    """How many items (query rows, heads, ...) of `elements_per_item` elements each one chunk of a chunked
    reference takes: REFERENCE_CHUNK_ELEMENTS // elements_per_item, at least 1. For query chunks of
    `attention`, elements_per_item = B · Hq · Nk (one query row of scores in every batch and head)."""
    return max(1, REFERENCE_CHUNK_ELEMENTS // elements_per_item)


def _weights(scores: torch.Tensor, allowed: torch.Tensor, weighting: str) -> torch.Tensor:
    """Attention weights from scores [.., n, Nk] (float32 at least) over the allowed keys (bool, same
    shape)."""
    if weighting == "relu":
        return torch.relu(scores).masked_fill(~allowed, 0.0)
    magnitude = scores.abs() if weighting == "cog" else scores
    probs = torch.softmax(magnitude.masked_fill(~allowed, float("-inf")), dim=-1)
    del magnitude  # cog: one score-sized tensor less while the weights are finished
    probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # no key: 0, not NaN
    if weighting == "cog":
        probs = probs * torch.sign(scores)
    return probs


def _attend_chunk(
    q_rows: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    scale: float,
    weighting: str,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of queries: q_rows [B, G, R, n, Dk] against k [B, G, Nk, Dk], v [B, G, Nk, Dv] under
    `allowed` (bool, broadcastable to [B, G, R, n, Nk]) -> (out [B, G, R, n, Dv], lse [B, G, R, n] or None).

    The R query heads of a KV head are stacked as the rows of one matmul, so K and V are read as they
    are (a broadcast matmul would copy them R times). Its score-sized tensors are freed on return."""
    batch, n_kv_heads, group, n, d_k = q_rows.shape
    n_k, d_v = k.shape[2], v.shape[-1]
    stacked = q_rows.reshape(batch, n_kv_heads, group * n, d_k)  # [B, G, R·n, Dk]
    scores = (stacked @ k.transpose(-1, -2)) * scale  # [B, G, R·n, Nk]
    scores = scores.view(batch, n_kv_heads, group, n, n_k)  # [B, G, R, n, Nk]
    allowed = allowed.expand(scores.shape)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    probs = _weights(scores, allowed, weighting)
    lse = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), dim=-1) if return_lse else None
    del scores
    probs = probs.to(v.dtype).reshape(batch, n_kv_heads, group * n, n_k)  # [B, G, R·n, Nk]
    return (probs @ v).view(batch, n_kv_heads, group, n, d_v), lse


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
    KV head h // (Hq // Hkv) (no copy of K/V). Which keys a query sees is `visible_keys` (causal,
    kv_lengths, per-KV-head window and sink), further restricted by `mask` (bool, broadcastable to
    [B, Hq, Nq, Nk]). A query that sees no key gets a zero output.

    weighting: "softmax"; "cog" (sign(s)·softmax(|s|): negative weights, Cog attention); "relu"
    (relu(s), unnormalised, as ReLA). Weights are computed in float32 at least. `query_chunk` bounds
    the [.., Nq, Nk] score and mask tensors by processing queries in chunks (same math;
    `reference_chunk` sizes it). `return_lse` also returns the natural-log sum of exp(s) over the
    visible keys [B, Hq, Nq] (-inf where none).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
    batch, n_q_heads, n_q, d_k = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    group = n_q_heads // n_kv_heads
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    q_grouped = q.view(batch, n_kv_heads, group, n_q, d_k)  # [B, G, R, Nq, Dk]
    if mask is not None:
        mask = mask.expand(batch, n_q_heads, n_q, n_k)  # a view: each chunk combines only its rows
    chunk = query_chunk or n_q
    outputs, lses = [], []
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        rows = torch.arange(start, stop, device=q.device)
        allowed = visible_keys(
            batch, n_kv_heads, rows, n_q, n_k, causal=causal, kv_lengths=kv_lengths, window=window, sink=sink
        )  # [B, G|1, 1, n, Nk]
        if mask is not None:
            rows_mask = mask[:, :, start:stop].reshape(batch, n_kv_heads, group, stop - start, n_k)
            allowed = allowed & rows_mask.to(q.device)
        out, lse = _attend_chunk(q_grouped[:, :, :, start:stop], k, v, allowed, scale, weighting, return_lse)
        outputs.append(out)  # [B, G, R, n, Dv]
        lses.append(lse)
    out = torch.cat(outputs, dim=3).reshape(batch, n_q_heads, n_q, v.shape[-1])
    if return_lse:
        return out, torch.cat(lses, dim=3).reshape(batch, n_q_heads, n_q)
    return out
