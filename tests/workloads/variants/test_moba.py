"""MoBA's block selection: own block always, future blocks never, top_k blocks in all, by the gate;
the decode cost reads only the selected blocks."""

import math

import pytest
import torch

from tests.workloads.variants.cases import make_trial
from workloads.variants import get_variant
from workloads.variants.moba import moba_mean_keys, select_blocks


@pytest.mark.parametrize("n,block_size,top_k", [(37, 8, 3), (40, 8, 2), (19, 5, 10), (9, 16, 2)])
def test_selection_rules(n, block_size, top_k):
    generator = torch.Generator().manual_seed(n)
    q, k = torch.randn(2, 4, n, 16, generator=generator), torch.randn(2, 2, n, 16, generator=generator)
    selected = select_blocks(q, k, block_size, top_k)  # [B, H, N, n_blocks]
    n_blocks = math.ceil(n / block_size)
    own = torch.arange(n) // block_size
    assert selected.shape == (2, 4, n, n_blocks)
    assert selected.gather(-1, own.expand(2, 4, n)[..., None]).all(), "the own block is always selected"
    future = torch.arange(n_blocks)[None, :] > own[:, None]
    assert not (selected & future).any(), "future blocks are never selected"
    assert torch.equal(selected.sum(-1), torch.minimum(own + 1, torch.tensor(top_k)).expand(2, 4, n))


def test_the_gate_is_the_dot_product_with_the_mean_key():
    """One query, three past blocks: the block whose mean key points along the query wins."""
    d, block = 4, 3
    k = torch.zeros(1, 1, 12, d)
    k[0, 0, 3:6, 1] = 1.0  # block 1's mean key is e_1
    k[0, 0, 6:9, 2] = -1.0  # block 2's is -e_2
    q = torch.zeros(1, 1, 12, d)
    q[0, 0, 11] = torch.tensor([0.0, 1.0, 1.0, 0.0])
    chosen = select_blocks(q, k, block, top_k=2)[0, 0, 11]
    assert chosen.tolist() == [False, True, False, True]


def test_mean_keys_count_the_causal_part_of_the_own_block():
    assert moba_mean_keys(10, 4, 1) == pytest.approx(sum(i % 4 + 1 for i in range(10)) / 10)


@pytest.mark.parametrize("n,expected", [(1100, 76 + 512), (1600, 64 + 512), (512, 512), (40, 40)])
def test_moba_decode_reads_its_own_partial_block_and_top_k_minus_one_full_ones(n, expected):
    point = {"phase": "decode", "seq_len": n, "batch": 1, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}
    moba = get_variant("moba").cost(make_trial("moba", {"block_size": 512, "top_k": 2}, **point))
    full = get_variant("gqa").cost(make_trial("gqa", **point))
    pooling = 2 * 16 * n * 4  # mean pooling reads every key once
    cache_per_token = 2 * 2 * 16 * 4  # K and V of 2 KV heads, float32
    assert moba.bytes_moved - pooling == full.bytes_moved - cache_per_token * (n - expected)
