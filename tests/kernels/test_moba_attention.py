"""moba_attention against the float64 reference with the block mask expanded to keys: random, full,
top-k gated and empty selections, block sizes around the kernel tile, lengths off both grids, GQA
ratios, head dims, scale, strides, dtypes, the per-tile block lists, and input validation."""

import importlib

import pytest
import torch

from kernels.moba_attention import block_config, causal_selection, moba_attention, tile_block_indices
from tests.helpers import assert_close, random_tensor
from tests.kernels.cases import FP32_REL_TOL, GPU_REL_TOL, HALF_REL_TOL, attention_inputs
from tests.kernels.invalid_inputs import MOBA_INVALID
from workloads.reference import attention
from workloads.variants.moba import select_blocks


def own_block(seq_len, n_blocks, block_size):
    """bool [N, n_blocks]: block j holds query i."""
    return (torch.arange(seq_len) // block_size)[:, None] == torch.arange(n_blocks)


def random_block_mask(batch, n_q_heads, seq_len, block_size, density, *, device, seed=0):
    """bool [B, Hq, N, n_blocks], each block on with probability `density`, own block forced on.
    Future blocks are drawn too: the kernel must mask them by causality."""
    n_blocks = -(-seq_len // block_size)
    generator = torch.Generator().manual_seed(seed + 1000)
    mask = torch.rand(batch, n_q_heads, seq_len, n_blocks, generator=generator) < density
    return (mask | own_block(seq_len, n_blocks, block_size)).to(device)


def key_mask(block_mask, block_size, seq_len):
    """bool [B, Hq, n, seq_len]: the block mask repeated along keys (only for small shapes)."""
    return block_mask.repeat_interleave(block_size, dim=-1)[..., :seq_len]


def reference(q, k, v, block_mask, block_size, **kwargs):
    """The float64 CPU reference on the very values the kernel saw."""
    q64, k64, v64 = (t.detach().cpu().double() for t in (q, k, v))
    mask = key_mask(block_mask.cpu(), block_size, q.shape[2])
    return attention(q64, k64, v64, causal=True, mask=mask, **kwargs)


def run_into_nan(q, k, v, block_mask, out=None, **kwargs):
    """moba_attention writing into an output pre-filled with NaN, so an unwritten tile fails."""
    if out is None:
        out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    result = moba_attention(q, k, v, block_mask, out=out, **kwargs)
    assert result is out
    return out


# (batch, Hq, Hkv, N, head_dim, block_size, density)
FP32_SHAPES = [
    pytest.param((1, 2, 2, 37, 32, 16, 0.3), id="mha-n37-bs16-eq-block_n"),
    pytest.param((2, 4, 2, 77, 48, 20, 0.4), id="gqa2-b2-n77-bs20-d48"),
    pytest.param((1, 8, 2, 61, 24, 40, 0.5), id="gqa4-n61-bs40-gt-block_m-d24"),
    pytest.param((1, 4, 1, 70, 80, 24, 0.3), id="mqa4-n70-bs24-d80"),
    pytest.param((2, 2, 1, 45, 16, 7, 0.3), id="gqa2-b2-n45-bs7-lt-block_n"),
    pytest.param((1, 2, 2, 50, 96, 64, 0.5), id="mha-n50-bs64-gt-n-one-block"),
    pytest.param((1, 4, 2, 100, 64, 33, 0.0), id="gqa2-n100-bs33-own-block-only"),
    pytest.param((3, 2, 1, 19, 128, 16, 0.5), id="gqa2-b3-n19-d128"),
]


@pytest.mark.parametrize("shape", FP32_SHAPES)
def test_moba_attention_random_masks_fp32(shape, device):
    batch, n_q_heads, n_kv_heads, seq_len, head_dim, block_size, density = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, seq_len, seq_len, head_dim, dtype=torch.float32, device=device
    )
    block_mask = random_block_mask(batch, n_q_heads, seq_len, block_size, density, device=device)
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("block_size", [16, 23, 48], ids=lambda s: f"bs{s}")
def test_moba_attention_selecting_everything_is_causal_attention(block_size, device):
    q, k, v = attention_inputs(2, 4, 2, 75, 75, 32, dtype=torch.float32, device=device)
    n_blocks = -(-75 // block_size)
    block_mask = torch.ones(2, 4, 75, n_blocks, dtype=torch.bool, device=device)
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    q64, k64, v64 = (t.cpu().double() for t in (q, k, v))
    assert_close(out, attention(q64, k64, v64, causal=True), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("block_size", [16, 20], ids=lambda s: f"bs{s}")
def test_moba_attention_selections_shared_by_whole_tiles(block_size, device):
    """Every query selects its own block and the even blocks: tiles mix full blocks (no mask),
    partial ones and the diagonal, with the last sub-tile of a block padded when block_size is
    not a multiple of the kernel's BLOCK_N."""
    seq_len = 111
    q, k, v = attention_inputs(2, 4, 2, seq_len, seq_len, 24, dtype=torch.float32, device=device, seed=4)
    n_blocks = -(-seq_len // block_size)
    selection = own_block(seq_len, n_blocks, block_size) | (torch.arange(n_blocks) % 2 == 0)
    block_mask = selection.expand(2, 4, -1, -1).to(device)
    block_m = block_config(24, torch.float32, block_size)[0]
    lists = tile_block_indices(causal_selection(block_mask, block_size), block_size, block_m)
    assert lists.full_kv_num_blocks.sum() > 0 and lists.kv_num_blocks.sum() > 0
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize(
    "n_q_heads, n_kv_heads, block_size, top_k",
    [
        pytest.param(2, 2, 16, 2, id="mha-bs16-top2"),
        pytest.param(4, 2, 17, 3, id="gqa2-bs17-top3"),
        pytest.param(4, 1, 12, 3, id="mqa4-bs12-top3"),
    ],
)
def test_moba_attention_top_k_gate_fp32(n_q_heads, n_kv_heads, block_size, top_k, device):
    q, k, v = attention_inputs(
        2, n_q_heads, n_kv_heads, 83, 83, 40, dtype=torch.float32, device=device, seed=3
    )
    block_mask = select_blocks(q, k, block_size, top_k)
    assert torch.all(block_mask.sum(-1) <= top_k)
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


def test_moba_attention_rows_without_keys_are_zero(device):
    """Rows that selected only future blocks, or nothing, see no key: exactly 0, never NaN."""
    seq_len, block_size = 50, 16
    q, k, v = attention_inputs(1, 2, 1, seq_len, seq_len, 32, dtype=torch.float32, device=device)
    block_mask = random_block_mask(1, 2, seq_len, block_size, 0.5, device=device)
    block_mask[:, 0, :20] = False
    block_mask[:, 0, 20:40, 2:] = True  # future of rows 20..31, own and future of rows 32..39
    block_mask[:, 0, 20:32, :2] = False
    block_mask[:, 1, 45:] = False
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert torch.all(out[:, 0, :32] == 0) and torch.all(out[:, 1, 45:] == 0)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


@pytest.mark.parametrize("block_size", [16, 21], ids=lambda s: f"bs{s}")
def test_moba_attention_never_reads_unselected_blocks(block_size, device):
    """Blocks 1 and 3 are selected by no query; their K and V are NaN, so one read of them (a
    visit, or a sub-tile running past its block's end) would poison the output."""
    seq_len = 100
    q, k, v = attention_inputs(2, 4, 2, seq_len, seq_len, 32, dtype=torch.float32, device=device)
    block_mask = random_block_mask(2, 4, seq_len, block_size, 0.5, device=device)
    unselected_keys = torch.zeros(seq_len, dtype=torch.bool)
    for block in (1, 3):
        block_mask[..., block] = False
        unselected_keys[block * block_size : (block + 1) * block_size] = True
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k[:, :, unselected_keys.to(device)] = float("nan")
    poisoned_v[:, :, unselected_keys.to(device)] = float("nan")
    out = run_into_nan(q, poisoned_k, poisoned_v, block_mask, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


def test_moba_attention_custom_scale(device):
    q, k, v = attention_inputs(1, 4, 2, 41, 41, 48, dtype=torch.float32, device=device)
    block_mask = random_block_mask(1, 4, 41, 16, 0.5, device=device)
    out = run_into_nan(q, k, v, block_mask, block_size=16, scale=0.3)
    assert_close(out, reference(q, k, v, block_mask, 16, scale=0.3), rel_tol=FP32_REL_TOL)


def test_moba_attention_non_contiguous_inputs_mask_and_output(device):
    """q and out as [B, N, H, D] transposed, k a head_dim slice of wider rows, v [B, N, Hkv, D]
    transposed, and one block mask per batch broadcast over heads with stride 0."""
    batch, n_q_heads, n_kv_heads, seq_len, head_dim, block_size = 2, 4, 2, 53, 32, 18
    generator = torch.Generator().manual_seed(1)
    q = random_tensor(batch, seq_len, n_q_heads, head_dim, device=device, generator=generator).transpose(1, 2)
    k = random_tensor(batch, n_kv_heads, seq_len, 2 * head_dim, device=device, generator=generator)[
        ..., :head_dim
    ]
    v = random_tensor(batch, seq_len, n_kv_heads, head_dim, device=device, generator=generator).transpose(
        1, 2
    )
    block_mask = random_block_mask(batch, 1, seq_len, block_size, 0.4, device=device).expand(
        -1, n_q_heads, -1, -1
    )
    out = torch.full((batch, seq_len, n_q_heads, head_dim), float("nan"), device=device).transpose(1, 2)
    assert not any(t.is_contiguous() for t in (q, k, v, block_mask, out))
    run_into_nan(q, k, v, block_mask, out=out, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=FP32_REL_TOL)


def test_moba_attention_allocates_output_when_not_given(device):
    q, k, v = attention_inputs(1, 2, 1, 30, 30, 32, dtype=torch.float16, device=device)
    block_mask = random_block_mask(1, 2, 30, 16, 0.5, device=device)
    out = moba_attention(q, k, v, block_mask, block_size=16)
    assert out.shape == q.shape and out.dtype == torch.float16 and out.device == q.device
    assert_close(out, reference(q, k, v, block_mask, 16), rel_tol=HALF_REL_TOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((2, 4, 2, 67, 64, 16), id="gqa2-b2-n67-bs16"),
        pytest.param((1, 8, 2, 90, 48, 37), id="gqa4-n90-bs37-d48"),
    ],
)
def test_moba_attention_half_precision(shape, dtype, device):
    batch, n_q_heads, n_kv_heads, seq_len, head_dim, block_size = shape
    q, k, v = attention_inputs(
        batch, n_q_heads, n_kv_heads, seq_len, seq_len, head_dim, dtype=dtype, device=device
    )
    block_mask = random_block_mask(batch, n_q_heads, seq_len, block_size, 0.4, device=device)
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert_close(out, reference(q, k, v, block_mask, block_size), rel_tol=HALF_REL_TOL[dtype])


def listed(counts, indices, b, h, tile):
    """The block indices one tile's list holds."""
    return indices[b, h, tile, : int(counts[b, h, tile])].tolist()


@pytest.mark.parametrize("density", [0.3, 0.97], ids=["sparse", "dense"])
def test_tile_block_indices_lists_exactly_the_causal_selection(density):
    """Per tile, full ∪ partial (disjoint, each ascending) is the set of blocks some query selected
    at or before itself; full ones are complete, before the tile's first query and selected by all
    its queries. Selected future blocks are dropped, so work follows the causal selection."""
    batch, n_q_heads, seq_len, block_size, block_m = 2, 3, 70, 12, 32
    block_mask = random_block_mask(batch, n_q_heads, seq_len, block_size, density, device="cpu", seed=5)
    lists = tile_block_indices(causal_selection(block_mask, block_size), block_size, block_m)
    n_tiles, n_blocks = -(-seq_len // block_m), block_mask.shape[3]
    for counts, indices in (lists[:2], lists[2:]):
        assert counts.shape == (batch, n_q_heads, n_tiles) and counts.dtype == torch.int32
        assert indices.shape == (batch, n_q_heads, n_tiles, n_blocks) and indices.dtype == torch.int32
    n_full = 0
    for b in range(batch):
        for h in range(n_q_heads):
            for tile in range(n_tiles):
                rows = range(tile * block_m, min((tile + 1) * block_m, seq_len))
                chosen = {
                    j for i in rows for j in range(n_blocks) if block_mask[b, h, i, j] and j * block_size <= i
                }
                full = {
                    j
                    for j in chosen
                    if (j + 1) * block_size <= rows[0] + 1 and all(block_mask[b, h, i, j] for i in rows)
                }
                assert listed(*lists[2:], b, h, tile) == sorted(full)
                assert listed(*lists[:2], b, h, tile) == sorted(chosen - full)
                n_full += len(full)
    assert (n_full > 0) == (density > 0.5)


def test_tile_block_indices_own_block_only_is_banded():
    """Selecting only the own block: a tile visits just the blocks its rows fall in (O(N) work),
    none of them full (the diagonal crosses each)."""
    seq_len, block_size, block_m = 200, 16, 32
    block_mask = own_block(seq_len, -(-seq_len // block_size), block_size)[None, None]
    lists = tile_block_indices(block_mask, block_size, block_m)
    assert lists.kv_num_blocks.flatten().tolist() == [2, 2, 2, 2, 2, 2, 1]
    assert listed(lists.kv_num_blocks, lists.kv_indices, 0, 0, 3) == [6, 7]
    assert lists.full_kv_num_blocks.sum() == 0


@pytest.mark.parametrize(
    "block_size, expected_block_n", [(7, 16), (16, 16), (100, 64), (2048, 64)], ids=lambda x: str(x)
)
def test_block_config_keeps_sub_tiles_inside_a_block(block_size, expected_block_n, monkeypatch):
    # By module object: the package `kernels` exports a function under the name moba_attention.
    monkeypatch.setattr(
        importlib.import_module("kernels.moba_attention.kernel"), "is_interpreted", lambda: False
    )
    assert block_config(128, torch.bfloat16, block_size)[1] == expected_block_n


@pytest.mark.parametrize("build, message", MOBA_INVALID)
def test_moba_attention_rejects_invalid_input(build, message, device):
    (q, k, v, block_mask), kwargs = build(device)
    kwargs.setdefault("block_size", 4)
    with pytest.raises(ValueError, match=message):
        moba_attention(q, k, v, block_mask, **kwargs)


def chunked_reference(q, k, v, block_mask, block_size, chunk=1024):
    """float32 reference on the GPU without an [N, N] mask: query rows [s, e) against keys [0, e),
    whose bottom-right causal alignment puts row i at position s + i."""
    seq_len = q.shape[2]
    q32, k32, v32 = q.float(), k.float(), v.float()
    out = torch.empty_like(q32)
    for start in range(0, seq_len, chunk):
        stop = min(start + chunk, seq_len)
        mask = key_mask(block_mask[:, :, start:stop], block_size, stop)
        out[:, :, start:stop] = attention(
            q32[:, :, start:stop], k32[:, :, :stop], v32[:, :, :stop], causal=True, mask=mask
        )
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bf16"])
@pytest.mark.parametrize("seq_len", [16384, 32768, 20000], ids=["n16k", "n32k", "n20000-ragged"])
def test_moba_attention_gpu_realistic(seq_len, dtype):
    """Compiled kernel at MoBA's shapes (block 2048, top-3 blocks, H=16, Hkv=4, D=128) against a
    float32 GPU reference computed in query chunks."""
    block_size = 2048
    q, k, v = attention_inputs(1, 16, 4, seq_len, seq_len, 128, dtype=dtype, device="cuda")
    block_mask = select_blocks(q, k, block_size, top_k=3)
    out = run_into_nan(q, k, v, block_mask, block_size=block_size)
    assert_close(out, chunked_reference(q, k, v, block_mask, block_size), rel_tol=GPU_REL_TOL[dtype])
