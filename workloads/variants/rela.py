"""Rectified linear attention (ReLA, Zhang et al. 2021): ReLU weights, no softmax; RMS-normalised heads.

q [B, H, N, D], k, v [B, G, N, D] (GQA: query head h reads KV head h // (H/G)), gain g [H, D]:

    s_ij = q_i · k_j / sqrt(D)
    a_i  = Σ_{j visible to i} relu(s_ij) v_j                       [B, H, N, D]
    o_i  = g_h ⊙ a_i / sqrt(mean_D(a_i²) + 1e-6)                   [B, H, N, D]

The weights are not normalised over the keys, so a head can attend to nothing (a_i = 0, then o_i = 0);
the RMS norm over head_dim keeps the output's scale independent of how many keys pass the ReLU. The
measured op covers the scores, the ReLU weighting, the value sum and the norm. Decode reads the same
K/V cache as GQA; the new token's query row goes through the same ReLU and norm.
"""

import torch

from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, Variant, Weight
from workloads.variants.gqa import grouped_attention_cost, phase_attention, qkv_specs
from workloads.variants.routing import query_rows, with_extra

NORM_EPS = 1e-6


def rms_normalised(out: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """out [B, H, N, D] normalised over D (in float32 at least), times gain [H, D]."""
    wide = out.to(torch.promote_types(out.dtype, torch.float32))
    normed = wide * torch.rsqrt(wide.square().mean(dim=-1, keepdim=True) + NORM_EPS)
    return (normed * gain[:, None, :]).to(out.dtype)


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    out = rms_normalised(phase_attention(trial, x, weighting="relu"), x["norm_gain"])  # [B, H, N|1, D]
    return out[:, :, 0] if trial.phase == "decode" else out


class RectifiedLinearAttention(Variant):
    name = "rela"
    summary = "ReLA: relu(q·k) weights (no softmax), head outputs RMS-normalised with a learned gain"
    kv_heads = "axis"
    flex_limit = (
        "its weights relu(s) are not normalised, and Flex always applies a softmax after the score_mod"
    )
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
    }

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return [*qkv_specs(trial), Weight("norm_gain", (trial.n_heads, trial.head_dim), init="ones")]

    def cost(self, trial: Trial) -> Cost:
        h, d = trial.n_heads, trial.head_dim
        # The norm: square, sum, scale and gain per output element; the gain [H, D] is read once.
        norm_flops = 4.0 * trial.batch * h * query_rows(trial) * d
        return with_extra(
            grouped_attention_cost(trial, self.n_params(trial)), trial, flops=norm_flops, elements=h * d
        )


VARIANT = RectifiedLinearAttention()
