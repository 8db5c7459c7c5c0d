"""The flex backend's block masks, element by element against the variants' reference masks, and what
Flex cannot do on this device coming back as `unsupported`."""

import math

import pytest
import torch

from tests.workloads.variants.cases import make_trial
from workloads.flex import TILE, causal_mask, dense_mask, selected_blocks_mask, streaming_mask
from workloads.measure import MeasureSettings
from workloads.reference import visible_keys
from workloads.runner import run_trial
from workloads.variants.moba import _key_mask, select_blocks

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "n_q,n_k", [pytest.param(300, 300, id="prefill-300"), pytest.param(1, 301, id="decode-301")]
)
def test_causal_mask_is_bottom_right(n_q, n_k):
    dense = dense_mask(causal_mask(n_q, n_k, CPU), 1, 1)[0, 0]
    expected = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)
    assert torch.equal(dense, expected)


@pytest.mark.parametrize(
    "n_q,n_k,windows,sink",
    [
        pytest.param(300, 300, (0, 37, 130), 5, id="prefill-one-retrieval-head"),
        pytest.param(200, 200, (64, 64, 64), 0, id="prefill-no-sink"),
        pytest.param(1, 333, (0, 100, 7), 3, id="decode"),
    ],
)
def test_streaming_mask_equals_the_reference_mask(n_q, n_k, windows, sink):
    n_heads = 2 * len(windows)  # two query heads per KV head
    dense = dense_mask(streaming_mask(windows, n_heads, sink, n_q, n_k, CPU), 1, n_heads)  # [1, H, Nq, Nk]
    allowed = visible_keys(
        1, len(windows), torch.arange(n_q), n_q, n_k, causal=True, window=torch.tensor(windows), sink=sink
    )  # [1, G, 1, Nq, Nk]
    expected = allowed.expand(1, len(windows), 2, n_q, n_k).reshape(1, n_heads, n_q, n_k)
    assert torch.equal(dense, expected)


def _moba_case(n: int, n_q: int, block_size: int, top_k: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, n_q, 16, generator=generator)
    k = torch.randn(2, 2, n, 16, generator=generator)
    return select_blocks(q, k, block_size, top_k)  # [B, H, Nq, n_blocks]


@pytest.mark.parametrize(
    "n,n_q,block_size,top_k",
    [
        pytest.param(300, 300, 50, 3, id="blocks-smaller-than-a-tile"),
        pytest.param(700, 700, 200, 2, id="blocks-straddling-tiles"),
        pytest.param(523, 1, 64, 3, id="decode"),
    ],
)
def test_moba_mask_equals_the_reference_mask(n, n_q, block_size, top_k):
    selected = _moba_case(n, n_q, block_size, top_k)
    dense = dense_mask(selected_blocks_mask(selected, block_size, n), 2, 4)
    causal = torch.ones(n_q, n, dtype=torch.bool).tril(n - n_q)
    assert torch.equal(dense, _key_mask(selected, block_size, n) & causal)


def test_moba_mask_lists_only_tiles_with_a_chosen_key():
    """Real block sparsity: with blocks of one tile, a (query tile, key tile) pair is listed exactly when
    a query of the tile chose that block. Where a tile's queries agree (here: equal queries per tile),
    top_k=2 of 16 blocks lists 2 tiles per query tile, not causal attention's up to 16. (Random queries
    of one tile choose different blocks and list nearly every earlier tile: Flex works in tiles.)"""
    n, block_size, tiles = 2048, TILE, 2048 // TILE
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, tiles, 1, 16, generator=generator).expand(-1, -1, -1, TILE, -1).reshape(2, 4, n, 16)
    k = torch.randn(2, 2, n, 16, generator=generator)
    selected = select_blocks(q, k, block_size, top_k=2)  # [B, H, N, 16]
    mask = selected_blocks_mask(selected, block_size, n)
    chosen_by_tile = selected.view(2, 4, tiles, TILE, tiles).any(dim=3)  # [B, H, q tiles, key tiles]
    assert torch.equal(mask.kv_num_blocks, chosen_by_tile.sum(-1, dtype=torch.int32))
    assert mask.kv_num_blocks.sum().item() == 2 * 4 * (1 + 2 * (tiles - 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="FlexAttention has a backward on a GPU")
def test_flex_train_on_a_cpu_is_unsupported_with_pytorchs_reason():
    result = run_trial(make_trial("gqa", backend="flex", phase="train"), MeasureSettings(min_run_time_s=0.01))
    assert result.status == "unsupported", result.error
    assert result.error.startswith("flex: FlexAttention does not support backward on CPU")


def test_tiles_of_the_moba_mask_cover_every_query():
    selected = _moba_case(300, 300, 50, 3)
    mask = selected_blocks_mask(selected, 50, 300)
    assert mask.kv_num_blocks.shape == (2, 4, math.ceil(300 / TILE))
    assert (mask.kv_num_blocks >= 1).all()  # every query tile sees at least its own block
