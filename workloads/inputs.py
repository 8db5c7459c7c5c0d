"""Kinds of benchmark inputs (the `inputs` axis): where a backend's accuracy falls off.

Every kind starts from the same random normal activations (never zeros) and reshapes some of them:

- randn: as drawn; attention scores q·k/sqrt(d) of magnitude ~1.
- large_logits: queries and keys (q*, k*: also caches and MLA's latent) scaled by sqrt(LOGIT_SCALE), so
  scores have a standard deviation of LOGIT_SCALE: magnitudes ~30-100, where softmax saturates and a
  kernel without a running max (or with a low-precision one) overflows.
- outliers: OUTLIER_CHANNELS channels of every key and value (k*, v*) scaled by OUTLIER_GAIN, as the
  massive-activation channels of trained models.
- long_tail: values (v*) drawn from a Student t with LONG_TAIL_DF degrees of freedom (heavy tails) in
  place of the normal ones.
Weights stay as drawn.
"""

import math

import torch

from analysis.schema import INPUT_KINDS  # the row contract names them

LOGIT_SCALE = 50.0
OUTLIER_GAIN = 100.0
OUTLIER_CHANNELS = 2
LONG_TAIL_DF = 3


def _named(inputs: dict[str, torch.Tensor], names: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [name for name in names if name.startswith(prefixes) and inputs[name].is_floating_point()]


def outlier_channels(width: int) -> list[int]:
    """The channels `outliers` scales: spread over the last dimension, never the same two."""
    return sorted({round(i * (width - 1) / max(1, OUTLIER_CHANNELS - 1)) for i in range(OUTLIER_CHANNELS)})


def student_t(shape, df: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """Student t samples: a normal over the root of a chi-square with `df` degrees over df."""
    normal = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    chi2 = torch.randn((df, *shape), generator=generator, device=device, dtype=torch.float32).square().sum(0)
    return (normal / torch.sqrt(chi2 / df)).to(dtype)


def shape_inputs(
    kind: str, inputs: dict[str, torch.Tensor], activations: list[str], generator: torch.Generator
) -> None:
    """Reshape the `activations` of `inputs` (in place) into input kind `kind`."""
    if kind == "randn":
        return
    if kind == "large_logits":
        for name in _named(inputs, activations, ("q", "k")):
            inputs[name].mul_(math.sqrt(LOGIT_SCALE))  # q and k each: scores × LOGIT_SCALE
    elif kind == "outliers":
        for name in _named(inputs, activations, ("k", "v")):
            inputs[name][..., outlier_channels(inputs[name].shape[-1])] *= OUTLIER_GAIN
    elif kind == "long_tail":
        for name in _named(inputs, activations, ("v",)):
            t = inputs[name]
            inputs[name] = student_t(t.shape, LONG_TAIL_DF, generator, t.device, t.dtype)
    else:
        raise ValueError(f"inputs: unknown kind {kind!r} (known: {', '.join(INPUT_KINDS)})")
