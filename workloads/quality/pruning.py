"""Head pruning study ("Are Sixteen Heads Really Better than One?", Michel et al. 2019).

Importance of head h in layer l: I_h = E_x |∂L/∂ξ_h| with ξ the head mask (1 = kept), on training
data. Heads are removed greedily, least important first, re-estimating importance after each removal,
and the held-out accuracy is recorded for every number of heads kept (at least one head per layer).
"""

from dataclasses import dataclass

import torch

from workloads.quality.model import TinyLM
from workloads.quality.train import accuracy, masked_loss


@dataclass(frozen=True)
class PruningPoint:
    heads_kept: int  # over all layers
    accuracy: float
    removed: tuple[int, int] | None  # (layer, head) removed to reach this point; None for the full model


def head_importance(model: TinyLM, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256):
    """[n_layers, H]: mean |∂loss/∂mask| over the examples, for the current masks."""
    layers = model.attention_layers()
    for layer in layers:
        layer.head_mask.requires_grad_(True)
        layer.head_mask.grad = None
    try:
        for start in range(0, len(inputs), batch_size):
            loss = masked_loss(model(inputs[start : start + batch_size]), targets[start : start + batch_size])
            grads = torch.autograd.grad(loss, [layer.head_mask for layer in layers])
            for layer, grad in zip(layers, grads, strict=True):
                layer.head_mask.grad = grad.abs() + (
                    0 if layer.head_mask.grad is None else layer.head_mask.grad
                )
        return torch.stack([layer.head_mask.grad for layer in layers])
    finally:
        for layer in layers:
            layer.head_mask.requires_grad_(False)
            layer.head_mask.grad = None


def prune_greedily(
    model: TinyLM,
    train: tuple[torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor],
) -> list[PruningPoint]:
    """Accuracy with every head, then after each greedy removal down to one head per layer.
    The model's masks are left as they were."""
    model.eval()
    layers = model.attention_layers()
    saved = [layer.head_mask.clone() for layer in layers]
    points = [PruningPoint(int(sum(m.sum() for m in saved)), accuracy(model, *held_out), None)]
    try:
        while True:
            masks = torch.stack([layer.head_mask for layer in layers])  # [n_layers, H]
            removable = (masks > 0) & (masks.sum(-1, keepdim=True) > 1)
            if not removable.any():
                return points
            importance = head_importance(model, *train).masked_fill(~removable, float("inf"))
            layer_index, head = divmod(int(importance.argmin()), masks.shape[1])
            layers[layer_index].head_mask[head] = 0.0
            kept = int(masks.sum()) - 1
            points.append(PruningPoint(kept, accuracy(model, *held_out), (layer_index, head)))
    finally:
        for layer, mask in zip(layers, saved, strict=True):
            layer.head_mask.copy_(mask)
