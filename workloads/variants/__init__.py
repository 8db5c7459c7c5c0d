"""The variant registry: every module of this package that defines `VARIANT` is one entry.

A new variant is one file here (plus its tests); nothing else needs to change.
"""

import importlib
import pkgutil

from workloads.variants.base import Cost, InvalidPoint, Variant

VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    if variant.name in VARIANTS and VARIANTS[variant.name] is not variant:
        raise ValueError(f"variant {variant.name!r} is registered twice")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r} (known: {', '.join(sorted(VARIANTS))})") from None


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        _variant = getattr(importlib.import_module(f"{__name__}.{_module.name}"), "VARIANT", None)
        if _variant is not None:
            register(_variant)

__all__ = ["VARIANTS", "Cost", "InvalidPoint", "Variant", "get_variant", "register"]
