"""Builders of malformed kernel calls for the validation tests of both kernels.

Each builder takes the device and returns (positional tensors, keyword arguments); `valid(device)`
gives a well-formed tuple of tensors, of which one is swapped out or to which keywords are added.
"""

from collections.abc import Callable


def replacing(valid: Callable, index: int, tensor_fn: Callable) -> Callable:
    """Valid inputs with the tensor at `index` replaced by tensor_fn(device)."""

    def build(device):
        tensors = list(valid(device))
        tensors[index] = tensor_fn(device)
        return tuple(tensors), {}

    return build


def with_kwargs(valid: Callable, **kwargs) -> Callable:
    """Valid inputs plus keyword arguments; a callable value is called with the device."""

    def build(device):
        return valid(device), {
            key: value(device) if callable(value) else value for key, value in kwargs.items()
        }

    return build
