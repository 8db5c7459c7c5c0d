"""Head pruning ("Are Sixteen Heads Really Better than One?", Michel et al. 2019).

MHA with a head mask: of the H heads, the first round(keep_heads · H) (at least one) are kept; pruned
heads output 0, are not computed and need no cache. The benchmark measures what removing heads saves;
the quality workloads measure what it costs in accuracy (with any mask, `head_mask`). The op includes
writing the zero outputs of pruned heads, so its output has the shape of MHA's.
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from workloads.backends import IMPLEMENTED_BACKENDS, load_kernels
from workloads.flex import causal_mask, flex
from workloads.reference import attention
from workloads.trial import Trial
from workloads.variants.base import Cost, InputSpec, Variant, dtype_size
from workloads.variants.gqa import grouped_attention_cost, qkv_specs


def kept_heads(trial: Trial) -> int:
    return max(1, round(trial.param_dict["keep_heads"] * trial.n_heads))


def _attend(trial: Trial, x: dict[str, torch.Tensor], kept: int) -> torch.Tensor:
    """The kept heads' outputs: [B, kept, N, D] (prefill) or [B, kept, D] (decode)."""
    backend = trial.backend
    if trial.phase == "decode":
        q, k, v = x["q"][:, :kept], x["k_cache"][:, :kept], x["v_cache"][:, :kept]
        if backend == "triton":
            return load_kernels().decode_attention(q, k, v, x["cache_seqlens"])
        if backend == "torch-sdpa":
            return F.scaled_dot_product_attention(q[:, :, None], k, v)[:, :, 0]
        if backend == "flex":
            return flex(q[:, :, None], k, v)[:, :, 0]
        return attention(q[:, :, None], k, v, kv_lengths=x["cache_seqlens"])[:, :, 0]
    q, k, v = x["q"][:, :kept], x["k"][:, :kept], x["v"][:, :kept]
    if backend == "triton":
        return load_kernels().flash_attention(q, k, v, causal=trial.causal)
    if backend == "torch-sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=trial.causal)
    if backend == "flex":
        return flex(q, k, v, causal_mask(q.shape[2], k.shape[2], q.device) if trial.causal else None)
    return attention(q, k, v, causal=trial.causal)


def _pruned(trial: Trial, x: dict[str, torch.Tensor]) -> torch.Tensor:
    kept = kept_heads(trial)
    head_out = _attend(trial, x, kept)
    if kept == trial.n_heads:
        return head_out
    zeros = head_out.new_zeros((head_out.shape[0], trial.n_heads - kept, *head_out.shape[2:]))
    return torch.cat([head_out, zeros], dim=1)


def head_mask(trial: Trial, device: torch.device | None = None) -> torch.Tensor:
    """[H] float: 1 for kept heads, 0 for pruned ones (the quality workloads may set any mask)."""
    mask = torch.zeros(trial.n_heads, device=device)
    mask[: kept_heads(trial)] = 1.0
    return mask


class PrunedHeads(Variant):
    name = "pruned"
    summary = "MHA with pruned heads: keep_heads of the heads computed and cached, the rest output 0"
    param_defaults = {"keep_heads": 0.5}
    implementations = {
        (backend, phase): _pruned for backend in IMPLEMENTED_BACKENDS for phase in ("prefill", "decode")
    }
    train_backends = IMPLEMENTED_BACKENDS

    def validate_params(self, params: dict) -> None:
        if not 0.0 < params["keep_heads"] <= 1.0:
            raise ValueError(f"keep_heads: {params['keep_heads']} is a share of the heads in (0, 1]")

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every head computed, then masked: independent of the slicing the implementations do."""
        if trial.phase == "decode":
            q, k, v, lengths = (inputs[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens"))
            out = attention(q[:, :, None], k, v, kv_lengths=lengths)[:, :, 0]
            return out * head_mask(trial, out.device).to(out.dtype)[:, None]
        out = attention(inputs["q"], inputs["k"], inputs["v"], causal=trial.causal)
        return out * head_mask(trial, out.device).to(out.dtype)[:, None, None]

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        return qkv_specs(trial)

    def cost(self, trial: Trial) -> Cost:
        # MHA over the kept heads (pruned heads are neither read nor cached), plus the zeros written.
        kept = kept_heads(trial)
        cost = grouped_attention_cost(replace(trial, n_heads=kept, n_kv_heads=kept), self.n_params(trial))
        rows = trial.batch * (1 if trial.phase == "decode" else trial.seq_len)
        zeros = rows * (trial.n_heads - kept) * trial.head_dim * dtype_size(trial.dtype)
        return replace(cost, bytes_moved=cost.bytes_moved + zeros)


VARIANT = PrunedHeads()
