"""A small causal language model whose attention layers are a variant's trainable reference layer.

tokens [B, N] -> token + learned position embeddings -> n_layers pre-norm blocks (attention, MLP)
-> final norm -> logits [B, N, V]. No dropout. The attention of every block is
`workloads.variants.layer.AttentionLayer` for one resolved variant point, so the quality of a variant is
measured with exactly the math its kernels are checked against.
"""

import torch
from torch import nn

from workloads.trial import Trial
from workloads.variants.base import d_model_of
from workloads.variants.layer import AttentionLayer


class Block(nn.Module):
    def __init__(self, trial: Trial, mlp_ratio: int):
        super().__init__()
        d_model = d_model_of(trial)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = AttentionLayer(trial)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, d_model]
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyLM(nn.Module):
    def __init__(self, trial: Trial, vocab_size: int, max_len: int, n_layers: int = 2, mlp_ratio: int = 4):
        super().__init__()
        d_model = d_model_of(trial)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(trial, mlp_ratio) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)  # [B, N, d_model]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # [B, N, V]

    def attention_layers(self) -> list[AttentionLayer]:
        return [block.attention for block in self.blocks]
