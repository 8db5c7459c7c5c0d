"""Multi-head latent attention (DeepSeek-V2/V3): the cache holds a latent c_kv and one shared RoPE key.

Per token the layer caches kv_latent = [c_kv (latent_dim = d_c); k_rope (rope_dim = d_R)], one "KV head"
for all H query heads: (d_c + d_R) elements per token and layer. Head h's key is [c W_UK,hᵀ; k_rope]
(d_h + d_R) and its value c W_UV,hᵀ (d_h); queries are [q_nope; q_rope] (d_h + d_R) and the softmax scale
is 1/sqrt(d_h + d_R), with d_h = head_dim.

- prefill (and train) up-projects keys and values per head and runs attention with d_qk != d_v;
- decode absorbs W_UK into the query (q̃_h = q_nope,h W_UK,h, [d_c]) and runs MQA over the cached latent
  with d_k = d_c + d_R and d_v = d_c (the values are a view of the latent), then o_h = ō_h W_UV,hᵀ.
Both equal the up-projected math (the reference); the op covers the up- and down-projections by W_UK and
W_UV. The RoPE rotation itself is left out (positions are the model's business); its key is kept for its
cache and FLOP cost. The query projection is one matrix (no query compression).
"""

import math

import torch
import torch.nn.functional as F

from workloads.backends import IMPLEMENTED_BACKENDS, load_kernels
from workloads.flex import causal_mask, flex
from workloads.reference import attention, reference_chunk
from workloads.trial import Trial
from workloads.variants.base import (
    Cost,
    InputSpec,
    TokenInput,
    Variant,
    Weight,
    attention_flops,
    dtype_size,
)


def _dims(trial: Trial) -> tuple[int, int, int]:
    params = trial.param_dict
    return trial.head_dim, params["latent_dim"], params["rope_dim"]


def _scale(trial: Trial) -> float:
    d_h, _, d_r = _dims(trial)
    return 1.0 / math.sqrt(d_h + d_r)


def _up_projected(trial: Trial, x: dict[str, torch.Tensor], latent: torch.Tensor):
    """Keys [B, H, N, d_h + d_R] and values [B, H, N, d_h] of every head from latent [B, 1, N, d_c + d_R]."""
    _, d_c, _ = _dims(trial)
    c_kv, k_rope = latent[..., :d_c], latent[..., d_c:]  # [B, 1, N, d_c], [B, 1, N, d_R]
    k_nope = torch.einsum("bxnc,hdc->bhnd", c_kv, x["w_uk"])  # [B, H, N, d_h]
    values = torch.einsum("bxnc,hdc->bhnd", c_kv, x["w_uv"])  # [B, H, N, d_h]
    keys = torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1, -1)], dim=-1)
    return keys, values


def _absorbed_query(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """q̃ = [q_nope W_UK; q_rope]: [B, H, d_c + d_R], the query of MQA over the latent."""
    d_h, _, _ = _dims(trial)
    q_latent = torch.einsum("bhd,hdc->bhc", x["q"][..., :d_h], x["w_uk"])  # [B, H, d_c]
    return torch.cat([q_latent, x["q"][..., d_h:]], dim=-1)


def _up_project_output(x: dict[str, torch.Tensor], o_latent: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bhc,hdc->bhd", o_latent, x["w_uv"])  # [B, H, d_c] -> [B, H, d_h]


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor], query_chunk: int | None = None) -> torch.Tensor:
    """The up-projected math in both phases (the reference)."""
    if trial.phase == "decode":
        keys, values = _up_projected(trial, x, x["kv_latent_cache"])
        out = attention(x["q"][:, :, None], keys, values, scale=_scale(trial), kv_lengths=x["cache_seqlens"])
        return out[:, :, 0]
    keys, values = _up_projected(trial, x, x["kv_latent"])
    return attention(x["q"], keys, values, causal=trial.causal, scale=_scale(trial), query_chunk=query_chunk)


def _chunked_reference(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """`_torch_ref` over chunks of query heads (heads are independent: each chunk up-projects the keys
    and values of its own heads only), with queries in chunks in prefill: the same math, its up-projected
    keys [B, h, N, d_h + d_R], values and scores [B, h, chunk, N] bounded by REFERENCE_CHUNK_ELEMENTS."""
    d_h, _, d_r = _dims(trial)
    latent = x["kv_latent_cache"] if trial.phase == "decode" else x["kv_latent"]  # [B, 1, N, d_c + d_R]
    batch, n_keys = latent.shape[0], latent.shape[2]
    n_heads = x["q"].shape[1]
    head_chunk = reference_chunk(batch * n_keys * (2 * d_h + d_r))  # keys and values of one head
    outputs = []
    for start in range(0, n_heads, head_chunk):
        heads = slice(start, start + head_chunk)
        part = {**x, "q": x["q"][:, heads], "w_uk": x["w_uk"][heads], "w_uv": x["w_uv"][heads]}
        query_chunk = reference_chunk(batch * part["q"].shape[1] * n_keys)
        outputs.append(_torch_ref(trial, part, query_chunk))  # [B, h, N, d_h] or decode [B, h, d_h]
    return torch.cat(outputs, dim=1)


def _torch_sdpa(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    if trial.phase == "decode":
        _, d_c, _ = _dims(trial)
        cache = x["kv_latent_cache"]  # [B, 1, L, d_c + d_R]; every cache is full, so no mask
        o_latent = F.scaled_dot_product_attention(
            _absorbed_query(trial, x)[:, :, None],
            cache,
            cache[..., :d_c],
            scale=_scale(trial),
            enable_gqa=True,
        )
        return _up_project_output(x, o_latent[:, :, 0])
    keys, values = _up_projected(trial, x, x["kv_latent"])
    return F.scaled_dot_product_attention(x["q"], keys, values, is_causal=trial.causal, scale=_scale(trial))


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Prefill: the up-projected keys [B, H, N, d_h + d_R] and values [B, H, N, d_h] (d_v != d_qk)."""
    keys, values = _up_projected(trial, x, x["kv_latent"])
    n = keys.shape[2]
    mask = causal_mask(n, n, keys.device) if trial.causal else None
    return flex(x["q"], keys, values, mask, scale=_scale(trial))


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    kernels = load_kernels()
    if trial.phase == "decode":
        _, d_c, _ = _dims(trial)
        cache = x["kv_latent_cache"]
        o_latent = kernels.decode_attention(
            _absorbed_query(trial, x), cache, cache[..., :d_c], x["cache_seqlens"], scale=_scale(trial)
        )
        return _up_project_output(x, o_latent)
    keys, values = _up_projected(trial, x, x["kv_latent"])
    return kernels.flash_attention(x["q"], keys, values, causal=trial.causal, scale=_scale(trial))


class MultiHeadLatentAttention(Variant):
    name = "mla"
    summary = "multi-head latent attention: cache a latent (latent_dim) + a shared RoPE key (rope_dim)"
    param_defaults = {"latent_dim": 512, "rope_dim": 64}
    smoke_params = {"latent_dim": 32, "rope_dim": 16}
    kv_heads = "one"
    implementations = {
        (backend, phase): impl
        for backend, impl in (("torch-ref", _torch_ref), ("torch-sdpa", _torch_sdpa), ("triton", _triton))
        for phase in ("prefill", "decode")
    } | {("flex", "prefill"): _flex}
    train_backends = IMPLEMENTED_BACKENDS
    flex_limit = (
        "prefill only: decode is MQA over the latent with d_qk = latent_dim + rope_dim and d_v = latent_dim "
        "(576 and 512 at DeepSeek's sizes), not offered on flex before it is measured on a GPU"
    )

    def validate_params(self, params: dict) -> None:
        for key in ("latent_dim", "rope_dim"):
            if params[key] < 1:
                raise ValueError(f"{key}: {params[key]} must be at least 1")

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return _chunked_reference(trial, inputs)

    def kernel_head_dims(self, trial: Trial) -> tuple[int, int]:
        d_h, d_c, d_r = _dims(trial)
        return (d_c + d_r, d_c) if trial.phase == "decode" else (d_h + d_r, d_h)

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        h = trial.n_heads
        d_h, d_c, d_r = _dims(trial)
        return [
            TokenInput("q", (h, d_h + d_r)),
            TokenInput("kv_latent", (1, d_c + d_r), cached=True),  # [c_kv; k_rope] per token
            Weight("w_uk", (h, d_h, d_c)),
            Weight("w_uv", (h, d_h, d_c)),
        ]

    def cost(self, trial: Trial) -> Cost:
        b, h, n = trial.batch, trial.n_heads, trial.seq_len
        d_h, d_c, d_r = _dims(trial)
        size = dtype_size(trial.dtype)
        weights = 2 * h * d_h * d_c
        if trial.phase == "decode":
            # Absorb W_UK into q, MQA over the latent (d_k = d_c + d_R, d_v = d_c), up-project by W_UV.
            flops = 2.0 * b * h * d_h * d_c * 2 + attention_flops(b, h, 1, n, d_c + d_r, d_c, causal=False)
            elements = b * h * (d_h + d_r) + b * n * (d_c + d_r) + weights + b * h * d_h
        else:
            up_projection = 2.0 * b * n * d_c * 2 * h * d_h
            flops = up_projection + attention_flops(b, h, n, n, d_h + d_r, d_h, trial.causal)
            elements = b * h * n * (d_h + d_r) + b * n * (d_c + d_r) + weights + b * h * n * d_h
        return Cost(
            flops=flops,
            bytes_moved=float(elements * size),
            n_params=self.n_params(trial),
            kv_bytes_per_token=(d_c + d_r) * size,
        )


VARIANT = MultiHeadLatentAttention()
