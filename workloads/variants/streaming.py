"""Retrieval and streaming heads (DuoAttention; RazorAttention is the same split, training-free).

Of the G KV heads, the first round(retrieval_heads · G) are retrieval heads and keep the full cache;
the others are streaming heads: each query sees only the first `sink` tokens and the `window` most
recent ones (itself included), so their cache stays at sink + window tokens however long the sequence.
Query heads follow their KV head (GQA). Prefill is causal by construction.
"""

import torch
import torch.nn.functional as F

from workloads.backends import load_kernels
from workloads.flex import flex, streaming_mask
from workloads.reference import visible_keys
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, Variant, dtype_size, mean_keys_per_query
from workloads.variants.gqa import grouped_attention_cost, phase_attention, qkv_specs


def retrieval_kv_heads(trial: Trial) -> int:
    return round(trial.param_dict["retrieval_heads"] * trial.n_kv_heads)


def window_sizes(trial: Trial) -> tuple[int, ...]:
    """Per KV head: 0 for retrieval heads (the whole causal past), `window` for streaming heads."""
    retrieval = retrieval_kv_heads(trial)
    return (0,) * retrieval + (trial.param_dict["window"],) * (trial.n_kv_heads - retrieval)


def kv_windows(trial: Trial, device: torch.device) -> torch.Tensor:
    """`window_sizes` as a tensor: [G] int32."""
    return torch.tensor(window_sizes(trial), dtype=torch.int32, device=device)


def _windows(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    # Benchmarks pass them as an input (no host-to-device copy per call); a trainable layer builds them.
    return x["kv_windows"] if "kv_windows" in x else kv_windows(trial, x["q"].device)


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    out = phase_attention(trial, x, window=_windows(trial, x), sink=trial.param_dict["sink"])
    return out[:, :, 0] if trial.phase == "decode" else out


def _torch_sdpa(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """SDPA with the sink + window pattern as a dense boolean mask (what a user of SDPA would write)."""
    decode = trial.phase == "decode"
    q, k, v = (x["q"][:, :, None], x["k_cache"], x["v_cache"]) if decode else (x["q"], x["k"], x["v"])
    batch, n_heads, n_q = q.shape[:3]
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    allowed = visible_keys(
        batch,
        n_kv_heads,
        torch.arange(n_q, device=q.device),
        n_q,
        n_k,
        causal=True,
        kv_lengths=x["cache_seqlens"] if decode else None,
        window=_windows(trial, x),
        sink=trial.param_dict["sink"],
    )  # [B, G, 1, Nq, Nk]
    mask = allowed.expand(batch, n_kv_heads, n_heads // n_kv_heads, n_q, n_k).reshape(
        batch, n_heads, n_q, n_k
    )
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return out[:, :, 0] if decode else out


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """FlexAttention under the sink + window pattern as a block mask (built once per shape): the tiles a
    streaming head's window leaves out are skipped, not masked."""
    decode = trial.phase == "decode"
    q, k, v = (x["q"][:, :, None], x["k_cache"], x["v_cache"]) if decode else (x["q"], x["k"], x["v"])
    sink = trial.param_dict["sink"]
    mask = streaming_mask(window_sizes(trial), q.shape[1], sink, q.shape[2], k.shape[2], q.device)
    out = flex(q, k, v, mask)
    return out[:, :, 0] if decode else out


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    kernels = load_kernels()
    sink, windows = trial.param_dict["sink"], _windows(trial, x)
    if trial.phase == "decode":
        return kernels.decode_attention(
            x["q"], x["k_cache"], x["v_cache"], x["cache_seqlens"], window=windows, sink=sink
        )
    return kernels.flash_attention(x["q"], x["k"], x["v"], causal=True, window=windows, sink=sink)


def streaming_keys(position: int, sink: int, window: int) -> int:
    """Keys a streaming head's query at `position` (0-based, causal) sees."""
    seen = position + 1
    return min(seen, window) + min(sink, max(0, seen - window))


class StreamingHeads(Variant):
    name = "streaming"
    summary = "retrieval heads with the full cache, streaming heads with sink + recent window (DuoAttention)"
    param_defaults = {"sink": 128, "window": 256, "retrieval_heads": 0.25}
    # At N=40 the default sink and window would cover every token: no head would stream.
    smoke_params = {"sink": 4, "window": 12, "retrieval_heads": 0.5}
    kv_heads = "axis"
    implementations = {
        (backend, phase): impl
        for backend, impl in (
            ("torch-ref", _torch_ref),
            ("torch-sdpa", _torch_sdpa),
            ("flex", _flex),
            ("triton", _triton),
        )
        for phase in ("prefill", "decode")
    }

    def validate_params(self, params: dict) -> None:
        if params["sink"] < 0:
            raise ValueError(f"sink: {params['sink']} must be >= 0")
        if params["window"] < 1:
            raise ValueError(f"window: {params['window']} must be at least 1")
        if not 0.0 <= params["retrieval_heads"] <= 1.0:
            raise ValueError(
                f"retrieval_heads: {params['retrieval_heads']} is a share of the KV heads in [0, 1]"
            )

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        if not point["causal"]:
            raise InvalidPoint("causal", "streaming heads are causal (a window of recent tokens)")
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def make_inputs(self, trial: Trial, device: torch.device, generator: torch.Generator) -> dict:
        return {**super().make_inputs(trial, device, generator), "kv_windows": kv_windows(trial, device)}

    def cost(self, trial: Trial) -> Cost:
        params = trial.param_dict
        sink, window, n = params["sink"], params["window"], trial.seq_len
        g, retrieval = trial.n_kv_heads, retrieval_kv_heads(trial)
        share = retrieval / g  # of KV heads (and of query heads) that see everything
        streaming_cache = min(n, sink + window)
        if trial.phase == "decode":
            kv_tokens = share * n + (1 - share) * streaming_cache
            mean_keys = None
        else:
            streaming_mean = sum(streaming_keys(p, sink, window) for p in range(n)) / n
            mean_keys = share * mean_keys_per_query(n, n, True) + (1 - share) * streaming_mean
            kv_tokens = None
        cost = grouped_attention_cost(
            trial, self.n_params(trial), mean_keys=mean_keys, kv_tokens_read=kv_tokens
        )
        # The cache of the (batch, seq_len) point: full for retrieval heads, sink + window for streaming ones.
        per_head = 2 * trial.head_dim * dtype_size(trial.dtype)
        cache_bytes = trial.batch * per_head * (retrieval * n + (g - retrieval) * streaming_cache)
        return Cost(
            flops=cost.flops,
            bytes_moved=cost.bytes_moved,
            n_params=cost.n_params,
            kv_bytes_per_token=round(cache_bytes / (trial.batch * n)),
            kv_cache_bytes=cache_bytes,
        )


VARIANT = StreamingHeads()
