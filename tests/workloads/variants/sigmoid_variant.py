"""Sigmoid attention over a causal sliding window (test only, never shipped): the worked example of
docs/adding-a-variant.md, loaded as a plugin (ATTNSWEEP_PLUGINS=tests.workloads.variants.sigmoid_variant)
with its own Triton kernel family (sigmoid_kernels/, found by the kernels' discovery).

q [B, H, N, D], k, v [B, G, N, D]; each query attends to the last `window` keys (itself included), each
weighted on its own by a sigmoid instead of a softmax over all of them (Ramapuram et al. 2024):

    o_i = Σ_{j ≤ i, i - j < window} σ(q_i·k_j / sqrt(D) + bias) · v_j      -> o [B, H, N, D]

Decode: the new token (the cache's last) against the last `window` cached tokens. The cache keeps every
token, as GQA's does: 2·G·D elements per token.
"""

import math

import torch

from workloads.backends import load_kernels
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, Variant
from workloads.variants.gqa import grouped_attention_cost, qkv_specs


def visible_keys(query_pos: torch.Tensor, n_keys: int, window: int) -> torch.Tensor:
    """[..., Nk] bool: key j is seen by the query at query_pos [...] when 0 <= query_pos - j < window."""
    distance = query_pos[..., None] - torch.arange(n_keys, device=query_pos.device)
    return (distance >= 0) & (distance < window)


def windowed_sigmoid(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_pos: torch.Tensor, window: int, bias: float
) -> torch.Tensor:
    """The reference math: scores of every key, masked (GQA by repeating K/V: clear, not fast).
    q [B, H, Nq, D], k, v [B, G, Nk, D], query_pos [Nq] or [B, 1, Nq] -> o [B, H, Nq, D]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # [B, H, Nk, D]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias  # [B, H, Nq, Nk]
    seen = visible_keys(query_pos, k.shape[2], window)  # [Nq, Nk] or [B, 1, Nq, Nk]
    return (torch.sigmoid(scores) * seen) @ v


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    params = trial.param_dict
    if trial.phase == "decode":  # the new token is the cache's last: q [B, H, 1, D]
        query_pos = (x["cache_seqlens"].long() - 1)[:, None, None]  # [B, 1, 1]
        out = windowed_sigmoid(
            x["q"][:, :, None], x["k_cache"], x["v_cache"], query_pos, params["window"], params["bias"]
        )
        return out[:, :, 0]
    query_pos = torch.arange(x["q"].shape[2], device=x["q"].device)  # [N]
    return windowed_sigmoid(x["q"], x["k"], x["v"], query_pos, params["window"], params["bias"])


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    params = trial.param_dict
    kernels = load_kernels()
    return kernels.sigmoid_attention(x["q"], x["k"], x["v"], window=params["window"], bias=params["bias"])


def windowed_mean_keys(n: int, window: int) -> float:
    """Keys each of n causal queries sees on average when it sees at most `window`."""
    if window >= n:
        return (n + 1) / 2
    return (window * (window + 1) / 2 + (n - window) * window) / n


class SigmoidAttention(Variant):
    name = "test-sigmoid"
    summary = "test only: sigmoid attention over a causal sliding window (docs/adding-a-variant.md)"
    param_defaults = {"window": 1024, "bias": -1.0}
    smoke_params = {"window": 16}  # below the smoke sweep's 40 tokens, so that the window cuts
    kv_heads = "axis"
    triton_kernels = {"prefill": ("sigmoid_kernels",)}  # its own family: a change reruns its points
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
        ("triton", "prefill"): _triton,
    }
    train_backends = ("torch-ref",)  # the Triton kernel has no backward

    def validate_params(self, params: dict) -> None:
        if params["window"] < 1:
            raise ValueError(f"window: {params['window']} must be at least 1")
        if not math.isfinite(params["bias"]):
            raise ValueError(f"bias: {params['bias']} is not finite")

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        if not point["causal"]:
            raise InvalidPoint("causal", f"{self.name} attends to a causal window (causal=false)")
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def cost(self, trial: Trial) -> Cost:
        """GQA's cost over the keys the window leaves: in decode the last min(N, window) cached tokens
        are read, but all N are kept (kv_bytes_per_token 2·G·D·size)."""
        n, window = trial.seq_len, trial.param_dict["window"]
        return grouped_attention_cost(
            trial,
            self.n_params(trial),
            mean_keys=windowed_mean_keys(n, window),
            kv_tokens_read=min(n, window),
        )


VARIANT = SigmoidAttention()
