"""Cog attention ("More Expressive Attention with Negative Weights", Lv et al. 2024).

Weights sign(s) · softmax(|s|) over the visible keys, s = q·k / sqrt(d): a head can add (positive),
subtract (negative) or ignore (small |s|) a token. Same shapes, cache and cost as GQA; the flash kernel
runs its online softmax over |s| and applies the sign to each weight.
"""

import torch

from workloads.backends import load_kernels
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, Variant
from workloads.variants.gqa import grouped_attention_cost, phase_attention, qkv_specs, reference_query_chunk


def _torch_ref(trial: Trial, x: dict[str, torch.Tensor], query_chunk: int | None = None) -> torch.Tensor:
    out = phase_attention(trial, x, weighting="cog", query_chunk=query_chunk)
    return out[:, :, 0] if trial.phase == "decode" else out


def _triton(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return load_kernels().flash_attention(x["q"], x["k"], x["v"], causal=trial.causal, weighting="cog")


class CogAttention(Variant):
    name = "cog"
    summary = "cog attention: weights sign(s)·softmax(|s|), negative weights allowed"
    kv_heads = "axis"
    flex_limit = (
        "its weights sign(s)·softmax(|s|) multiply the normalised weights by the score's sign, "
        "after the softmax that a score_mod feeds"
    )
    implementations = {
        ("torch-ref", "prefill"): _torch_ref,
        ("torch-ref", "decode"): _torch_ref,
        ("triton", "prefill"): _triton,
    }

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # The torch-ref math, with queries in chunks so long sequences fit in memory.
        return _torch_ref(trial, inputs, query_chunk=reference_query_chunk(trial, inputs))

    def cost(self, trial: Trial) -> Cost:
        return grouped_attention_cost(trial, self.n_params(trial))


VARIANT = CogAttention()
