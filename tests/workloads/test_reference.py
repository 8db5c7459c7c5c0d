"""workloads.reference.attention against an independent, head-by-head loop in float64."""

import math

import pytest
import torch

from tests.helpers import assert_close, random_tensor
from workloads.reference import attention


def per_head_loop(q, k, v, causal, scale, kv_lengths=None):
    """The textbook formula, one (batch, head) at a time, K/V repeated per query head."""
    batch, n_q_heads, n_q, _ = q.shape
    n_kv_heads, n_k = k.shape[1], k.shape[2]
    out = torch.zeros(batch, n_q_heads, n_q, v.shape[-1], dtype=q.dtype)
    for b in range(batch):
        for h in range(n_q_heads):
            kv = h // (n_q_heads // n_kv_heads)
            for i in range(n_q):
                last = n_k if kv_lengths is None else int(kv_lengths[b])
                if causal:
                    last = min(last, i + n_k - n_q + 1)
                if last <= 0:
                    continue
                s = (k[b, kv, :last] @ q[b, h, i]) * scale
                out[b, h, i] = torch.softmax(s, 0) @ v[b, kv, :last]
    return out


CASES = [
    pytest.param(2, 4, 4, 13, 13, 8, False, id="mha-noncausal-b2"),
    pytest.param(1, 8, 2, 17, 17, 16, True, id="gqa4-causal"),
    pytest.param(2, 6, 1, 5, 19, 8, True, id="mqa-causal-nq<nk"),
    pytest.param(1, 4, 2, 9, 4, 8, True, id="gqa2-causal-nq>nk-empty-rows"),
]


@pytest.mark.parametrize("batch,hq,hkv,nq,nk,d,causal", CASES)
def test_attention_matches_per_head_loop(batch, hq, hkv, nq, nk, d, causal):
    gen = torch.Generator().manual_seed(0)
    q = random_tensor(batch, hq, nq, d, dtype=torch.float64, generator=gen)
    k = random_tensor(batch, hkv, nk, d, dtype=torch.float64, generator=gen)
    v = random_tensor(batch, hkv, nk, d + 3, dtype=torch.float64, generator=gen)  # d_v != d_k
    expected = per_head_loop(q, k, v, causal, 1 / math.sqrt(d))
    assert_close(attention(q, k, v, causal=causal), expected, rel_tol=1e-12)
    assert_close(attention(q, k, v, causal=causal, query_chunk=4), expected, rel_tol=1e-12, name="chunked")


def test_attention_kv_lengths_and_scale():
    gen = torch.Generator().manual_seed(1)
    q = random_tensor(3, 4, 1, 8, dtype=torch.float64, generator=gen)
    k = random_tensor(3, 2, 11, 8, dtype=torch.float64, generator=gen)
    v = random_tensor(3, 2, 11, 8, dtype=torch.float64, generator=gen)
    lengths = torch.tensor([1, 11, 0], dtype=torch.int32)
    out = attention(q, k, v, scale=0.3, kv_lengths=lengths)
    assert_close(out, per_head_loop(q, k, v, False, 0.3, lengths), rel_tol=1e-12)
    assert torch.equal(out[2], torch.zeros_like(out[2])), "a sequence with an empty cache outputs zeros"


@pytest.mark.parametrize("weighting", ["softmax", "cog", "relu"])
def test_query_chunks_are_the_same_math(weighting):
    """Chunks of 4 of 13 queries (GQA, R = 3) under every mask at once: causal, windows with a sink, a
    broadcast [Nq, Nk] mask, kv_lengths; the output and the log-sum-exp equal the unchunked ones."""
    gen = torch.Generator().manual_seed(2)
    q = random_tensor(2, 6, 13, 8, dtype=torch.float64, generator=gen)
    k = random_tensor(2, 2, 17, 8, dtype=torch.float64, generator=gen)
    v = random_tensor(2, 2, 17, 5, dtype=torch.float64, generator=gen)
    mask = torch.rand(13, 17, generator=gen) > 0.3  # [Nq, Nk], broadcast over batch and heads
    options = dict(
        causal=True,
        window=torch.tensor([0, 5]),
        sink=2,
        mask=mask,
        kv_lengths=torch.tensor([17, 14]),
        weighting=weighting,
        return_lse=True,
    )
    out, lse = attention(q, k, v, **options)
    chunked_out, chunked_lse = attention(q, k, v, query_chunk=4, **options)
    assert_close(chunked_out, out, rel_tol=1e-12, name="output")
    visible = lse.isfinite()
    assert torch.equal(chunked_lse.isfinite(), visible)
    assert_close(chunked_lse[visible], lse[visible], rel_tol=1e-12, name="lse")
