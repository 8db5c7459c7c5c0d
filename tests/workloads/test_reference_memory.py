"""The chunked references: the same math as the unchunked torch-ref, in memory bounded by the chunk.

On a GPU a reference runs in float32 on the device, at up to 32k tokens (issue 14): an N×N score or
mask tensor, or keys up-projected for every head at once, would not fit. Here the chunk budget
`workloads.reference.REFERENCE_CHUNK_ELEMENTS` is made small and the peak of live tensor bytes during a
reference at a scaled-down point (non-power-of-two shapes) must stay within a small multiple of the
inputs plus the chunk, far below the unchunked N×N (or all-heads) term.
"""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tests.helpers import assert_close
from tests.workloads.variants import cases
from workloads import reference
from workloads.reference import attention
from workloads.variants import cog, dcmha, get_variant, gqa, mla, moba, mta

BYTES = 8  # float64, the reference precision on the CPU


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storage while the mode is active (`peak`, `current`).

    Every storage an op returns counts once (views share it) from the op until the storage is freed
    (`weakref.finalize` on the storage, which fires when the last tensor using it goes); `tensors` count
    from the start (a call's inputs). Scratch memory an op frees before returning is not seen, and
    neither are torch's CPU allocations to `tracemalloc`, hence this mode."""

    def __init__(self, tensors=()):
        super().__init__()
        self.sizes: dict[int, int] = {}  # storage data_ptr -> bytes
        self.current = 0
        self.peak = 0
        for tensor in tensors:
            self._count(tensor)

    def _release(self, pointer: int) -> None:
        self.current -= self.sizes.pop(pointer)

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        pointer, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or pointer in self.sizes:
            return
        self.sizes[pointer] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._count(value)
        return out


def test_live_bytes_counts_what_is_alive():
    def pattern() -> torch.Tensor:
        a = torch.ones(1000, dtype=torch.float64)  # 8000 live
        b = a + 1  # 16000
        del a  # 8000
        c = b[:10].clone()  # 8080
        view = b[:3]  # no new storage
        del b  # still 8080: the view keeps b's storage
        d = torch.zeros(3000, dtype=torch.float64)  # 32080: the peak
        del c, d  # 8000
        return view

    given = torch.ones(50, dtype=torch.float64)  # counted from the start
    with LiveBytes([given]) as live:
        view = pattern()
        assert live.current == 400 + 8000
    assert live.peak == 400 + 32080
    del view
    assert live.current == 400


def _peak_bytes(variant_name: str, trial, inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(peak live bytes during the variant's reference, bytes of its inputs)."""
    input_bytes = sum(t.untyped_storage().nbytes() for t in inputs.values())
    with torch.no_grad(), LiveBytes(inputs.values()) as live:
        get_variant(variant_name).reference(trial, inputs)
    return live.peak, input_bytes


# (variant, params, point, chunk budget in elements). The budget takes 20 query rows of B·H·N scores (a
# row chunk of 20 of 300 queries), one MLA head of 21 in decode, one MTA head group of 15.
B, N = 2, 300
ROWS = B * 6 * N * 20  # 20 query rows at 6 heads
GROUPED = {"n_heads": 6, "n_kv_heads": 2}
MLA = {"latent_dim": 24, "rope_dim": 8}
MEMORY_CASES = [
    pytest.param("gqa", None, GROUPED, ROWS, id="gqa-prefill"),
    pytest.param("mha", None, {"n_heads": 6}, ROWS, id="mha-prefill"),
    pytest.param("cog", None, GROUPED, ROWS, id="cog-prefill"),
    pytest.param("moba", {"block_size": 20, "top_k": 3}, GROUPED, ROWS, id="moba-prefill"),
    pytest.param("dcmha", {"rank": 2}, {"n_heads": 6}, ROWS, id="dcmha-prefill"),
    pytest.param("mta", None, {"n_heads": 30, "seq_len": 150}, B * 2 * 150 * 150, id="mta-prefill"),
    pytest.param("mla", MLA, {"phase": "decode", "n_heads": 21, "head_dim": 16}, B * N * 40, id="mla-decode"),
    pytest.param("mla", MLA, {"n_heads": 15, "head_dim": 16}, B * 15 * N * 20, id="mla-prefill"),
]


@pytest.mark.parametrize("variant,params,point,budget", MEMORY_CASES)
def test_reference_peak_is_bounded_by_the_chunk(monkeypatch, variant, params, point, budget):
    """Peak <= 2 · inputs + 6 chunks of budget elements (a chunk holds a few score-sized tensors at once:
    scores, masked scores, weights, a mask), whereas the unchunked math holds several [B, H, N, N]."""
    monkeypatch.setattr(reference, "REFERENCE_CHUNK_ELEMENTS", budget)
    trial = cases.make_trial(variant, params, **{"batch": B, "seq_len": N, "head_dim": 12, **point})
    inputs = cases.as_float64(cases.make_inputs(trial))
    peak, input_bytes = _peak_bytes(variant, trial, inputs)
    bound = 2 * input_bytes + 6 * budget * BYTES
    assert peak <= bound, f"{trial.label}: peak {peak / 2**20:.1f} MiB > bound {bound / 2**20:.1f} MiB"


def test_grouped_heads_read_kv_without_copies():
    """MQA decode, 6 query heads on one KV head: K and V are read in place, not copied per query head
    (the scores [3, 6, 1, 500] are small next to K [3, 1, 500, 72])."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 6, 1, 72, dtype=torch.float64, generator=gen)
    k = torch.randn(3, 1, 500, 72, dtype=torch.float64, generator=gen)
    v = torch.randn(3, 1, 500, 72, dtype=torch.float64, generator=gen)
    with LiveBytes([q, k, v]) as live:
        attention(q, k, v, kv_lengths=torch.full((3,), 500))
    inputs = sum(t.untyped_storage().nbytes() for t in (q, k, v))
    assert live.peak < inputs + k.untyped_storage().nbytes()


# The torch-ref backend (one chunk) of each variant whose reference is chunked, by phase.
UNCHUNKED = {"gqa": gqa._torch_ref, "cog": cog._torch_ref, "moba": moba._torch_ref}
UNCHUNKED |= {"mla": mla._torch_ref, "dcmha": dcmha._torch_ref, "mta": mta._torch_ref}
EQUALITY_CASES = [
    pytest.param("gqa", None, dict(causal=True), id="gqa-causal"),
    pytest.param("gqa", None, dict(causal=False), id="gqa-full"),
    pytest.param("gqa", None, dict(phase="decode"), id="gqa-decode"),
    pytest.param("cog", None, dict(causal=True), id="cog-causal"),
    pytest.param("cog", None, dict(phase="decode"), id="cog-decode"),
    pytest.param("moba", {"block_size": 5, "top_k": 3}, dict(seq_len=37), id="moba-prefill"),
    pytest.param("moba", {"block_size": 5, "top_k": 3}, dict(seq_len=37, phase="decode"), id="moba-decode"),
    pytest.param("mla", {"latent_dim": 24, "rope_dim": 8}, dict(n_heads=6, seq_len=61), id="mla-prefill"),
    pytest.param("mla", {"latent_dim": 24, "rope_dim": 8}, dict(n_heads=6, phase="decode"), id="mla-decode"),
    pytest.param("dcmha", {"rank": 2}, dict(causal=True), id="dcmha-causal"),
    pytest.param("dcmha", {"rank": 3}, dict(causal=False), id="dcmha-full"),
    pytest.param("mta", {"head_group": 3}, dict(n_heads=9), id="mta-prefill"),
]


def _chunked_trial(monkeypatch, variant: str, params: dict | None, point: dict):
    """The trial at a small point, its reference in several chunks of a small budget."""
    trial = cases.make_trial(variant, params, **{"seq_len": 23, "n_heads": 6, "n_kv_heads": 3, **point})
    batch, n = trial.batch, trial.seq_len
    if variant == "mla":  # one head a chunk (keys and values: 2·d_h + d_R = 40 per key), then 40 query rows
        budget = batch * n * (2 * trial.head_dim + trial.param_dict["rope_dim"])
    elif variant == "mta":  # one head group a chunk
        budget = batch * trial.param_dict["head_group"] * n * n
    else:  # 3 query rows a chunk
        budget = 3 * batch * trial.n_heads * n
    monkeypatch.setattr(reference, "REFERENCE_CHUNK_ELEMENTS", budget)
    return trial


@pytest.mark.parametrize("variant,params,point", EQUALITY_CASES)
def test_chunked_reference_is_the_unchunked_math(monkeypatch, variant, params, point):
    trial = _chunked_trial(monkeypatch, variant, params, point)
    inputs = cases.as_float64(cases.make_inputs(trial))
    chunked = get_variant(variant).reference(trial, inputs)
    assert_close(chunked, UNCHUNKED[variant](trial, inputs), rel_tol=1e-12, name=trial.label)


@pytest.mark.parametrize("variant,params,point", EQUALITY_CASES)
def test_chunked_reference_stays_on_the_inputs_device(monkeypatch, variant, params, point):
    """On meta tensors: a tensor factory without device= (a CPU tensor) would meet a meta one and fail,
    as it would meet a CUDA one on a GPU."""
    trial = _chunked_trial(monkeypatch, variant, params, point)
    inputs = {name: t.to("meta") for name, t in cases.as_float64(cases.make_inputs(trial)).items()}
    assert get_variant(variant).reference(trial, inputs).device.type == "meta"
