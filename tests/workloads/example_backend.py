"""A test-only backend loaded as a plugin (ATTNSWEEP_PLUGINS=tests.workloads.example_backend), proving
that a backend of your own needs no edit of the package (README "Backends of your own").

It runs MHA/GQA/MQA the way a wrapper of an installed library (flash_attn, FlashInfer) would: inputs
moved to the library's [B, N, H, D] layout, grouped heads handled by the library, output moved back.
The "library" here is plain PyTorch einsum, so that the test runs everywhere.
"""

import math

import torch

from workloads.backends import Backend


def _attend_bnhd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """The wrapped library's call: q [B, Nq, Hq, D], k, v [B, Nk, Hkv, D] -> [B, Nq, Hq, D]."""
    group = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if causal:  # bottom-right: query i sees keys j <= i + Nk - Nq
        n_q, n_k = q.shape[1], k.shape[1]
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.float()).to(q.dtype)


def _prefill(trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    q, k, v = (x[name].transpose(1, 2) for name in ("q", "k", "v"))  # [B, H, N, D] -> [B, N, H, D]
    return _attend_bnhd(q, k, v, trial.causal).transpose(1, 2)


def _decode(trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    q = x["q"][:, None]  # [B, H, D] -> [B, 1, H, D]
    k, v = x["k_cache"].transpose(1, 2), x["v_cache"].transpose(1, 2)  # full caches [B, L, G, D]
    return _attend_bnhd(q, k, v, causal=False)[:, 0]


BACKEND = Backend(
    "example-bnhd",
    "test-only plugin: attention in the [B, N, H, D] layout of flash_attn-style libraries",
    implementations={
        (variant, phase): impl
        for variant in ("mha", "gqa", "mqa")
        for phase, impl in (("prefill", _prefill), ("decode", _decode))
    },
    trains=True,
)
