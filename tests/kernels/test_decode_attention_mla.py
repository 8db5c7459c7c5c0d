"""decode_attention as MLA decode (DeepSeek-V2 weight absorption): MQA over one latent cache with
Dk = d_c + d_R and Dv = d_c, V a strided view of the cache's first d_c columns, the explicit MLA
scale; plus Dk != Dv with separate V caches and GQA, and the validation of head dims and out."""

import pytest
import torch

from kernels import decode_attention
from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import (
    DECODE_SPLITS,
    FP32_REL_TOL,
    GPU_REL_TOL,
    HALF_REL_TOL,
    decode_reference,
    mla_decode_inputs,
    mla_scale,
    poison_invisible,
    run_decode_into_nan,
)
from tests.kernels.invalid_inputs import MLA_INVALID
from workloads.reference import attention

# (H, d_c, d_R, L_max, cache_seqlens). Interpreted blocks: 16 heads, 16 keys; Dk = 80 is read as
# 64 + 16 columns and Dk = 48 as 32 + 16; H = 40 spans three head blocks, the last one partial.
MLA_SHAPES = [
    pytest.param((16, 64, 16, 45, [0, 1, 45, 30]), id="h16-dc64-dr16-len0-len1"),
    pytest.param((40, 32, 16, 37, [37, 5, 20]), id="h40-dc32-dr16-three-head-blocks"),
    pytest.param((5, 64, 32, 29, [29, 1]), id="h5-dc64-dr32"),
]


@pytest.mark.parametrize("num_splits", DECODE_SPLITS)
@pytest.mark.parametrize("shape", MLA_SHAPES)
def test_decode_attention_mla_matches_reference(shape, num_splits, device):
    n_heads, latent_dim, rope_dim, max_len, lengths = shape
    q, kv_cache, v_cache, seqlens = mla_decode_inputs(
        n_heads, latent_dim, rope_dim, max_len, lengths, dtype=torch.float32, device=device
    )
    assert v_cache.data_ptr() == kv_cache.data_ptr() and not v_cache.is_contiguous()
    scale = mla_scale(32, rope_dim)
    out = run_decode_into_nan(q, kv_cache, v_cache, seqlens, scale=scale, num_splits=num_splits)
    assert out.shape == (len(lengths), n_heads, latent_dim)
    assert_close(out, decode_reference(q, kv_cache, v_cache, seqlens, scale=scale), rel_tol=FP32_REL_TOL)


def test_decode_attention_mla_transposed_cache_layout(device):
    """Latent cache stored [B, L_max, 1, Dk] and viewed as [B, 1, L_max, Dk]; q a slice of wider rows."""
    batch, n_heads, latent_dim, rope_dim, max_len = 3, 16, 64, 16, 40
    generator = torch.Generator().manual_seed(2)
    stored = random_tensor(batch, max_len, 1, latent_dim + rope_dim, device=device, generator=generator)
    kv_cache = stored.transpose(1, 2)
    wide_q = random_tensor(batch, n_heads, 2 * (latent_dim + rope_dim), device=device, generator=generator)
    q = wide_q[..., latent_dim + rope_dim :]
    seqlens = torch.tensor([40, 17, 2], dtype=torch.int32, device=device)
    scale = mla_scale(48, rope_dim)
    out = run_decode_into_nan(q, kv_cache, kv_cache[..., :latent_dim], seqlens, scale=scale, num_splits=2)
    ref = decode_reference(q, kv_cache, kv_cache[..., :latent_dim], seqlens, scale=scale)
    assert_close(out, ref, rel_tol=FP32_REL_TOL)


# (Hq, Hkv, L_max, Dk, Dv, cache_seqlens): V in its own cache, wider or narrower than K.
SEPARATE_V_SHAPES = [
    pytest.param((8, 2, 37, 96, 40, [37, 0, 12]), id="gqa4-dk96-dv40"),
    pytest.param((6, 3, 30, 24, 48, [30, 1]), id="gqa2-dk24-dv48"),
    pytest.param((32, 1, 25, 64, 80, [25, 9]), id="mqa32-dk64-dv80"),
]


@pytest.mark.parametrize("shape", SEPARATE_V_SHAPES)
def test_decode_attention_separate_v_head_dim(shape, device):
    n_q_heads, n_kv_heads, max_len, head_dim_k, head_dim_v, lengths = shape
    generator = torch.Generator().manual_seed(3)
    batch = len(lengths)
    q = random_tensor(batch, n_q_heads, head_dim_k, device=device, generator=generator)
    k_cache = random_tensor(batch, n_kv_heads, max_len, head_dim_k, device=device, generator=generator)
    v_cache = random_tensor(batch, n_kv_heads, max_len, head_dim_v, device=device, generator=generator)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    out = run_decode_into_nan(q, k_cache, v_cache, seqlens, num_splits=2)
    assert_close(out, decode_reference(q, k_cache, v_cache, seqlens), rel_tol=FP32_REL_TOL)


def test_decode_attention_v_view_not_at_column_zero(device):
    """V = the cache's last columns: a view of the same memory that is not K's prefix."""
    q, kv_cache, _, seqlens = mla_decode_inputs(16, 64, 16, 33, [33, 8], dtype=torch.float32, device=device)
    v_cache = kv_cache[..., 16:]
    out = run_decode_into_nan(q, kv_cache, v_cache, seqlens, scale=0.1, num_splits=2)
    assert_close(out, decode_reference(q, kv_cache, v_cache, seqlens, scale=0.1), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("window, sink", [(6, 0), (12, 4)], ids=["window6", "window12-sink4"])
def test_decode_attention_mla_streaming(window, sink, device):
    """A window and sink on the latent cache; rows nobody sees hold NaN."""
    q, kv_cache, _, seqlens = mla_decode_inputs(
        16, 64, 16, 45, [45, 20, 3], dtype=torch.float32, device=device
    )
    kv_poisoned, _ = poison_invisible(kv_cache, kv_cache, seqlens, window, sink)
    scale = mla_scale(32, 16)
    out = run_decode_into_nan(
        q, kv_poisoned, kv_poisoned[..., :64], seqlens, scale=scale, window=window, sink=sink, num_splits=2
    )
    ref = decode_reference(q, kv_cache, kv_cache[..., :64], seqlens, scale=scale, window=window, sink=sink)
    assert_close(out, ref, rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_decode_attention_mla_half_precision(dtype, device):
    q, kv_cache, v_cache, seqlens = mla_decode_inputs(16, 64, 16, 45, [45, 30, 1], dtype=dtype, device=device)
    scale = mla_scale(32, 16)
    out = run_decode_into_nan(q, kv_cache, v_cache, seqlens, scale=scale, num_splits=3)
    assert_close(
        out, decode_reference(q, kv_cache, v_cache, seqlens, scale=scale), rel_tol=HALF_REL_TOL[dtype]
    )


@pytest.mark.parametrize("build, message", MLA_INVALID)
def test_decode_attention_mla_rejects_invalid_input(build, message, device):
    (q, kv_cache, v_cache, seqlens), kwargs = build(device)
    with pytest.raises(ValueError, match=message):
        decode_attention(q, kv_cache, v_cache, seqlens, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("num_splits", [None, 1, 6], ids=["splits-default", "splits1", "splits6"])
def test_decode_attention_gpu_mla(num_splits, dtype):
    """DeepSeek-V2 decode sizes: H = 128, d_c = 512, d_R = 64, L_max = 4096, ragged lengths, scale
    1/sqrt(128 + 64), against a float32 GPU reference."""
    generator = torch.Generator().manual_seed(0)
    lengths = [1, 4096, 2049, 77] + torch.randint(1, 4097, (2,), generator=generator).tolist()
    q, kv_cache, v_cache, seqlens = mla_decode_inputs(128, 512, 64, 4096, lengths, dtype=dtype, device="cuda")
    scale = mla_scale(128, 64)
    out = run_decode_into_nan(q, kv_cache, v_cache, seqlens, scale=scale, num_splits=num_splits)
    ref = attention(
        q[:, :, None].float(), kv_cache.float(), v_cache.float(), kv_lengths=seqlens, scale=scale
    )[:, :, 0]
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
def test_decode_attention_gpu_mla_streaming(dtype):
    """MLA sizes with a 256-key window and a 128-key sink on an 8k latent cache; invisible rows NaN."""
    lengths = [8192, 5000, 300, 1]
    q, kv_cache, _, seqlens = mla_decode_inputs(128, 512, 64, 8192, lengths, dtype=dtype, device="cuda")
    kv_poisoned, _ = poison_invisible(kv_cache, kv_cache, seqlens, 256, 128)
    scale = mla_scale(128, 64)
    out = run_decode_into_nan(
        q, kv_poisoned, kv_poisoned[..., :512], seqlens, scale=scale, window=256, sink=128
    )
    ref = attention(
        q[:, :, None].float(),
        kv_cache.float(),
        kv_cache[..., :512].float(),
        kv_lengths=seqlens,
        scale=scale,
        window=256,
        sink=128,
    )[:, :, 0]
    assert_close(out, ref, rel_tol=GPU_REL_TOL[dtype])
