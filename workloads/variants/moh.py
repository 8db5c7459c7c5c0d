"""Mixture-of-Head attention (MoH, Jin et al. 2024): each token uses its shared heads + top-k routed heads.

Gates per token [B, N, H]: shared heads h < H_s get α1 · softmax(shared_logits)_h; routed heads get
α2 · softmax(router_logits)_h renormalised over the token's top_k routed heads, 0 for the others; the
two-stage weights [α1, α2] = 2 · softmax(stage_logits). Head h's output for token i is gate[i, h] ·
attention_h(i): a head a token did not pick contributes 0 and, in the Triton kernel, costs nothing;
compute scales with (H_s + top_k) / H. Keys and values of every head are computed and cached (a causal
LM needs them for later tokens). The op covers the gating and the attention.
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from workloads.backends import load_kernels
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, InvalidPoint, TokenInput, Variant, dtype_size
from workloads.variants.gqa import flex_attention, grouped_attention_cost, phase_attention, qkv_specs


def moh_gates(
    shared_logits: torch.Tensor | None,
    router_logits: torch.Tensor,
    stage_logits: torch.Tensor | None,
    top_k: int,
) -> torch.Tensor:
    """Gates [B, N, H], zeros for the routed heads a token did not pick.

    shared_logits [B, N, H_s] (H_s >= 1), router_logits [B, N, H - H_s], stage_logits [B, N, 2].
    Without shared heads both are None: the routed gates stand alone (α2 = 1).
    """
    probs = torch.softmax(router_logits.float(), dim=-1)
    top = probs.topk(top_k, dim=-1)
    routed = torch.zeros_like(probs).scatter(-1, top.indices, top.values / top.values.sum(-1, keepdim=True))
    if shared_logits is None:
        return routed.to(router_logits.dtype)
    stage = 2.0 * torch.softmax(stage_logits.float(), dim=-1)  # [B, N, 2]: α1, α2
    shared = stage[..., :1] * torch.softmax(shared_logits.float(), dim=-1)
    return torch.cat([shared, stage[..., 1:] * routed], dim=-1).to(router_logits.dtype)


def _gates(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    shared = trial.param_dict["shared_heads"]
    shared_logits = x.get("shared_logits")
    if shared == 1:  # one shared head: its softmax is 1, nothing to project
        shared_logits = torch.zeros_like(x["router_logits"][..., :1])
    return moh_gates(shared_logits, x["router_logits"], x.get("stage_logits"), trial.param_dict["top_k"])


def _gated(out: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """out [B, H, N, D] · gates [B, N, H]."""
    return out * gates.transpose(1, 2)[..., None]


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every head computed, then gated (the reference math)."""
    if trial.phase == "decode":
        token_logits = {name: t[:, None] for name, t in x.items() if name.endswith("_logits")}  # [B, 1, ..]
        return _gated(phase_attention(trial, x), _gates(trial, token_logits))[:, :, 0]
    return _gated(phase_attention(trial, x), _gates(trial, x))


def _torch_sdpa(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    out = F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=trial.causal, enable_gqa=True)
    return _gated(out, _gates(trial, x))


def _flex(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return _gated(flex_attention(trial, x), _gates(trial, x))


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return load_kernels().moh_attention(x["q"], x["k"], x["v"], _gates(trial, x), causal=trial.causal)


class MixtureOfHeads(Variant):
    name = "moh"
    summary = "mixture-of-head attention: shared heads + top-k routed heads per token, gated outputs"
    param_defaults = {"shared_heads": 1, "top_k": 2}
    triton_kernels = {"prefill": ("moh_attention",)}
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
        ("torch-sdpa", "prefill"): _torch_sdpa,
        ("flex", "prefill"): _flex,
        ("triton", "prefill"): _triton,
    }

    def validate_params(self, params: dict) -> None:
        if params["shared_heads"] < 0:
            raise ValueError(f"shared_heads: {params['shared_heads']} must be >= 0")
        if params["top_k"] < 1:
            raise ValueError(f"top_k: {params['top_k']} must be at least 1")

    def resolve(self, point: dict) -> dict:
        point = super().resolve(point)
        params = self.point_params(point)
        routed = point["n_heads"] - params["shared_heads"]
        if routed < params["top_k"]:
            raise InvalidPoint(
                "n_heads",
                f"n_heads={point['n_heads']} leaves {max(routed, 0)} routed heads "
                f"for top_k={params['top_k']} "
                f"(shared_heads={params['shared_heads']})",
            )
        return point

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        params = trial.param_dict
        shared, routed = params["shared_heads"], trial.n_heads - params["shared_heads"]
        # Shared heads are weighted by a softmax among themselves (nothing to learn for one), and the
        # two-stage weights balance shared against routed heads (nothing to balance without shared ones).
        shared_router = [TokenInput("shared_logits", (shared,), heads_first=False)] if shared > 1 else []
        stage = [TokenInput("stage_logits", (2,), heads_first=False)] if shared > 0 else []
        return [
            *qkv_specs(trial),
            *shared_router,
            TokenInput("router_logits", (routed,), heads_first=False),
            *stage,
        ]

    def active_share(self, trial: Trial) -> float:
        params = trial.param_dict
        return (params["shared_heads"] + params["top_k"]) / trial.n_heads

    def cost(self, trial: Trial) -> Cost:
        share = self.active_share(trial)
        cost = grouped_attention_cost(trial, self.n_params(trial), query_share=share)
        if trial.phase != "decode":
            return cost  # in prefill every head's K/V is read by some token
        # One new token reads the caches of its active heads only.
        b, g, n, d = trial.batch, trial.n_kv_heads, trial.seq_len, trial.head_dim
        unread = (1 - share) * 2 * b * g * n * d * dtype_size(trial.dtype)
        return replace(cost, bytes_moved=cost.bytes_moved - unread)


VARIANT = MixtureOfHeads()
