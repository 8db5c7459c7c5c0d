"""The interface every attention variant implements, and the cost arithmetic they share."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from workloads.trial import Trial

# (backend, phase) -> callable(trial, inputs) -> output
Implementation = Callable[[Trial, dict[str, torch.Tensor]], torch.Tensor]


class InvalidPoint(ValueError):
    """A point of the grid that this variant cannot describe (e.g. n_heads % n_kv_heads != 0)."""

    def __init__(self, axis: str, reason: str):
        super().__init__(reason)
        self.axis = axis  # the sweep axis at fault, for the user's error message


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one forward of one attention layer (DESIGN.md §4)."""

    flops: float
    bytes_moved: float
    n_params: int
    kv_bytes_per_token: int


def dtype_size(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def mean_keys_per_query(n_q: int, n_k: int, causal: bool) -> float:
    """Keys each query sees on average; causal masks align bottom-right (query i sees keys
    j <= i + n_k - n_q)."""
    if not causal:
        return float(n_k)
    if n_k >= n_q:
        return n_k - n_q + (n_q + 1) / 2
    return n_k * (n_k + 1) / (2 * n_q)


def attention_flops(batch: int, heads: int, n_q: int, n_k: int, d_qk: int, d_v: int, causal: bool) -> float:
    """2 FLOPs per multiply-add for Q·Kᵀ and for P·V over the keys each query sees."""
    return 2.0 * batch * heads * n_q * mean_keys_per_query(n_q, n_k, causal) * (d_qk + d_v)


class Variant:
    """One attention variant: parameters, constraints, inputs, reference math, backends, cost.

    Subclasses set `name`, `summary`, `param_defaults` and `implementations`, and implement
    `make_inputs`, `reference` and `cost`; `resolve` applies the variant's constraints.
    """

    name: str
    summary: str
    param_defaults: Mapping[str, Any] = {}
    implementations: Mapping[tuple[str, str], Implementation] = {}

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults merged with `params`; ValueError naming the first unknown or invalid key."""
        unknown = sorted(set(params) - set(self.param_defaults))
        if unknown:
            known = ", ".join(sorted(self.param_defaults)) or "none"
            raise ValueError(f"{unknown[0]}: unknown parameter of {self.name} (known: {known})")
        return {**self.param_defaults, **params}

    def resolve(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point with this variant's constraints applied; InvalidPoint when it has none."""
        return point

    def unsupported(self, backend: str, phase: str) -> str | None:
        """Why (backend, phase) cannot run this variant, or None when it can."""
        if (backend, phase) in self.implementations:
            return None
        return f"{self.name} has no {backend} implementation of phase {phase}"

    def run(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.implementations[(trial.backend, trial.phase)](trial, inputs)

    def make_inputs(
        self, trial: Trial, device: torch.device, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Plain PyTorch math, run on inputs already cast to the reference precision."""
        raise NotImplementedError

    def cost(self, trial: Trial) -> Cost:
        raise NotImplementedError
