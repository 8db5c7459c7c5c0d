"""The kernel configurations `kernels.aot` compiles: the launches the GPU sweeps make, built on meta
tensors (shapes and strides only) through each family's own launch function.

A case is a name and a function returning its launches; the registry is data. A family may keep
its cases in its own folder instead (`AOT_CASES` in its __init__.py, kernels/_families.py): they are
added here as "<folder>/<case>", so a new family needs no edit of this file. Shapes follow the
sweeps in orchestrator/conf/sweep/ (gpu_table: B=4, 32 query / 8 KV heads, head_dim 128;
variants_prefill: B=2, 16 / 4 heads; variants_decode: B=16, 32 / 8 heads, caches to 32k; MLA decode
at 128 heads as DeepSeek serves it; moba_long; moh_heads). What the compiler sees of a shape is
which sizes are 1 and which are multiples of 16, and the constexprs (head dims, group size, tiles):
the sequence lengths here are representative, not exhaustive.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from kernels import FAMILIES
from kernels._common import Launch
from kernels._families import family_aot_cases
from kernels.decode_attention.kernel import decode_launches
from kernels.flash_attention.backward import backward_launches
from kernels.flash_attention.forward import forward_launch
from kernels.moba_attention.kernel import moba_launch
from kernels.moh_attention.kernel import moh_launch

H100_SMS = 132  # the split-KV decode sizes its grid by the SM count
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _empty(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


@dataclass(frozen=True)
class Shape:
    """A prefill / train point: q [B, H, N, Dqk], k [B, G, N, Dqk], v and o [B, G|H, N, Dv]."""

    d_qk: int
    d_v: int | None = None  # None: d_qk
    dtype: str = "bf16"
    causal: bool = True
    batch: int = 4
    heads: int = 32
    kv_heads: int = 8
    seq_len: int = 4096

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v, o) as meta tensors."""
        d_v = self.d_qk if self.d_v is None else self.d_v
        b, h, g, n, t = self.batch, self.heads, self.kv_heads, self.seq_len, DTYPES[self.dtype]
        q, k = _empty(b, h, n, self.d_qk, dtype=t), _empty(b, g, n, self.d_qk, dtype=t)
        return q, k, _empty(b, g, n, d_v, dtype=t), _empty(b, h, n, d_v, dtype=t)


def prefill(
    shape: Shape, *, windowed: bool = False, sink: int = 0, weighting: str = "softmax", lse: bool = False
) -> list[Launch]:
    """flash_attention forward; `windowed`: a window per KV head (streaming heads)."""
    q, k, v, out = shape.tensors()
    lse_buffer = _empty(*out.shape[:3], dtype=torch.float32) if lse else None
    window = _empty(shape.kv_heads, dtype=torch.int32) if windowed else None
    launch = forward_launch(
        q, k, v, out, lse_buffer, window, causal=shape.causal, scale=None, sink=sink, weighting=weighting
    )
    return [launch]


def backward(shape: Shape) -> list[Launch]:
    """flash_attention_backward: preprocess, dK/dV and dQ."""
    q, k, v, out = shape.tensors()
    grad_out, lse = torch.empty_like(out), _empty(*out.shape[:3], dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    return backward_launches(grad_out, q, k, v, out, lse, dq, dk, dv, causal=shape.causal, scale=None)


def decode(
    d_k: int,
    d_v: int | None = None,
    *,
    dtype: str = "bf16",
    batch: int = 16,
    heads: int = 32,
    kv_heads: int = 8,
    cache_len: int = 32768,
    windowed: bool = False,
    sink: int = 0,
    v_from_k: bool = False,
) -> list[Launch]:
    """decode_attention: q [B, H, Dk] over k_cache [B, G, L, Dk] and v_cache [B, G, L, Dv]; with
    v_from_k, v_cache is k_cache's first Dv columns (MLA's latent cache)."""
    d_v = d_k if d_v is None else d_v
    t = DTYPES[dtype]
    q, k_cache = _empty(batch, heads, d_k, dtype=t), _empty(batch, kv_heads, cache_len, d_k, dtype=t)
    v_cache = k_cache[..., :d_v] if v_from_k else _empty(batch, kv_heads, cache_len, d_v, dtype=t)
    cache_seqlens = _empty(batch, dtype=torch.int32)
    window = _empty(kv_heads, dtype=torch.int32) if windowed else None
    out = _empty(batch, heads, d_v, dtype=t)
    return decode_launches(
        q, k_cache, v_cache, cache_seqlens, window, out,
        scale=None, sink=sink, num_splits=None, v_from_k=v_from_k, num_sms=H100_SMS,
    )  # fmt: skip


def moba(
    head_dim: int,
    *,
    block_size: int,
    dtype: str = "bf16",
    batch: int = 1,
    heads: int = 16,
    seq_len: int = 32768,
) -> list[Launch]:
    """moba_attention: MHA prefill over the gated key blocks."""
    t = DTYPES[dtype]
    q, k, v = (_empty(batch, heads, seq_len, head_dim, dtype=t) for _ in range(3))
    n_blocks = -(-seq_len // block_size)
    block_mask = _empty(batch, heads, seq_len, n_blocks, dtype=torch.bool)
    return [moba_launch(q, k, v, block_mask, torch.empty_like(q), block_size=block_size, scale=None)]


def moh(
    head_dim: int, *, dtype: str = "bf16", batch: int = 2, heads: int = 16, seq_len: int = 8192
) -> list[Launch]:
    """moh_attention: causal prefill over each head's routed tokens."""
    t = DTYPES[dtype]
    q, k, v = (_empty(batch, heads, seq_len, head_dim, dtype=t) for _ in range(3))
    gates = _empty(batch, seq_len, heads, dtype=t)
    return [moh_launch(q, k, v, gates, torch.empty_like(q), causal=True, scale=None)]


CASES: dict[str, Callable[[], list[Launch]]] = {
    # Prefill (gpu_table, gqa_heads, variants_prefill): head dims, causal or not, GQA groups 1/4/8, MQA.
    "prefill/bf16/d64/causal": partial(prefill, Shape(64)),
    "prefill/bf16/d64/full": partial(prefill, Shape(64, causal=False)),
    "prefill/bf16/d128/causal": partial(prefill, Shape(128)),
    "prefill/bf16/d128/full": partial(prefill, Shape(128, causal=False)),
    "prefill/bf16/d128/causal/mha": partial(prefill, Shape(128, kv_heads=32)),
    "prefill/bf16/d128/full/mha": partial(prefill, Shape(128, causal=False, kv_heads=32)),
    "prefill/bf16/d128/causal/group8": partial(prefill, Shape(128, kv_heads=4)),
    "prefill/bf16/d128/causal/mqa": partial(prefill, Shape(128, kv_heads=1)),
    "prefill/bf16/d256/causal": partial(prefill, Shape(256)),
    "prefill/bf16/d256/full": partial(prefill, Shape(256, causal=False)),
    "prefill/fp16/d128/causal": partial(prefill, Shape(128, dtype="fp16")),
    "prefill/fp32/d32/causal": partial(prefill, Shape(32, dtype="fp32", heads=4, kv_heads=4, seq_len=256)),
    # MLA prefill: keys [nope; rope] 128 + 64, values 128 (variants_prefill).
    "prefill/bf16/mla-192-128/causal": partial(prefill, Shape(192, 128, batch=2, heads=16, kv_heads=16)),
    # Streaming heads: a window per KV head + 128 sink keys; Cog's signed weights; the train forward's lse.
    "prefill/bf16/d128/window-sink": partial(
        prefill, Shape(128, batch=2, heads=16, kv_heads=4), windowed=True, sink=128
    ),
    "prefill/bf16/d128/cog": partial(prefill, Shape(128, batch=2, heads=16, kv_heads=4), weighting="cog"),
    "prefill/bf16/d128/lse": partial(prefill, Shape(128), lse=True),
    # Backward (phase train): dK/dV and dQ.
    "backward/bf16/d64/causal": partial(backward, Shape(64)),
    "backward/bf16/d128/causal": partial(backward, Shape(128)),
    "backward/bf16/d128/full/mha": partial(backward, Shape(128, causal=False, kv_heads=32)),
    "backward/bf16/d256/causal": partial(backward, Shape(256)),
    "backward/bf16/mla-192-128/causal": partial(backward, Shape(192, 128, batch=2, heads=16, kv_heads=16)),
    "backward/fp32/d32/causal": partial(backward, Shape(32, dtype="fp32", heads=4, kv_heads=4, seq_len=256)),
    # Split-KV decode (variants_decode, gpu_table): GQA, MHA, MQA, streaming heads, MLA over its latent.
    "decode/bf16/d128/gqa": partial(decode, 128),
    "decode/bf16/d128/mha": partial(decode, 128, kv_heads=32),
    "decode/bf16/d128/mqa": partial(decode, 128, kv_heads=1),
    "decode/bf16/d128/window-sink": partial(decode, 128, windowed=True, sink=128),
    "decode/bf16/mla-576-512/h128": partial(
        decode, 576, 512, batch=64, heads=128, kv_heads=1, cache_len=8192, v_from_k=True
    ),
    "decode/bf16/mla-576-512/h32": partial(decode, 576, 512, heads=32, kv_heads=1, v_from_k=True),
    "decode/fp32/d32/gqa": partial(decode, 32, dtype="fp32", batch=2, heads=4, kv_heads=2, cache_len=512),
    # MoBA (moba_long, variants_prefill) and MoH (moh_heads).
    "moba/bf16/d128/block512": partial(moba, 128, block_size=512),
    "moba/bf16/d128/block2048": partial(moba, 128, block_size=2048),
    "moh/bf16/d128": partial(moh, 128),
    # Every family's own cases (AOT_CASES in kernels/<family>/__init__.py).
    **family_aot_cases(FAMILIES),
}
