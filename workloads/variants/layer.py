"""Any registered variant as a trainable attention layer: x [B, N, d_model] -> y [B, N, d_model].

The layer owns one linear projection per activation the variant reads (q, k, v, router logits, ...),
the variant's own weights at their initial values, and an output projection; its forward is the
variant's reference math (`Variant.forward`), so what the quality workloads train is exactly what the
benchmarks check the kernels against.
"""

import math

import torch
from torch import nn

from workloads.trial import Trial, canonical_json
from workloads.variants import get_variant
from workloads.variants.base import TokenInput, Weight, d_model_of, initial_weight


def layer_trial(
    variant: str,
    *,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    params: dict | None = None,
    causal: bool = True,
) -> Trial:
    """The resolved point a layer is built for (batch and seq_len are taken from x at run time)."""
    implementation = get_variant(variant)
    point = {
        "variant": variant,
        "backend": "torch-ref",
        "phase": "train",
        "batch": 1,
        "seq_len": 1,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "dtype": "float32",
        "causal": causal,
        "params": canonical_json(implementation.check_params(params or {})),
    }
    return Trial(**implementation.resolve(point))


class AttentionLayer(nn.Module):
    def __init__(self, trial: Trial):
        super().__init__()
        self.trial = trial
        self.variant = get_variant(trial.variant)
        d_model = d_model_of(trial)
        self.specs = self.variant.input_specs(trial)
        self.projections = nn.ModuleDict(
            {
                s.name: nn.Linear(d_model, math.prod(s.features), bias=False)
                for s in self.specs
                if isinstance(s, TokenInput) and s.project
            }
        )
        self.weights = nn.ParameterDict(
            {s.name: nn.Parameter(initial_weight(s)) for s in self.specs if isinstance(s, Weight)}
        )
        # 1 keeps a head, 0 removes it (head pruning); applied to the per-head outputs [B, H, N, Dv].
        self.register_buffer("head_mask", torch.ones(trial.n_heads))
        out_features = self.variant.output_features(trial)
        self.out_proj = (
            nn.Linear(out_features, d_model, bias=False) if self.variant.output_projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape  # [B, N, d_model]
        inputs: dict[str, torch.Tensor] = dict(self.weights.items())
        for spec in self.specs:
            if isinstance(spec, Weight):
                continue
            value = self.projections[spec.name](x) if spec.project else x
            if spec.heads_first:
                heads, width = spec.features
                value = value.view(batch, n, heads, width).transpose(1, 2)  # [B, H, N, D]
            else:
                value = value.view(batch, n, *spec.features)  # [B, N, ...]
            inputs[spec.name] = value
        out = self.variant.forward(self.trial, inputs)
        if out.dim() == 4:
            out = out * self.head_mask.to(out.dtype)[:, None, None]
            out = out.transpose(1, 2).reshape(batch, n, -1)  # [B, H, N, Dv] -> [B, N, H·Dv]
        return self.out_proj(out) if self.out_proj is not None else out


def build_layer(variant: str, **shape) -> AttentionLayer:
    """E.g. build_layer("moh", n_heads=8, n_kv_heads=8, head_dim=16, params={"top_k": 4})."""
    return AttentionLayer(layer_trial(variant, **shape))
