"""The variant registry: every module of this package that defines `VARIANT` is one entry; plugins
(ATTNSWEEP_PLUGINS) add variants and backends.

A new variant is one file here (plus its tests and its README row; docs/adding-a-variant.md is the
checklist): sweeps that name `all` (variants_smoke) take it at its `smoke_params` without an edit.
"""

import importlib
import itertools
import os
import pkgutil
from typing import Any

from workloads.backends import BACKENDS, register_backend
from workloads.trial import canonical_json
from workloads.variants.base import Cost, InvalidPoint, Variant

VARIANTS: dict[str, Variant] = {}
PLUGINS_VARIABLE = "ATTNSWEEP_PLUGINS"
# In a sweep's variant list (sweep.variants=[all]): every registered variant, plugins included.
ALL_VARIANTS = "all"


def register(variant: Variant) -> Variant:
    if variant.name == ALL_VARIANTS:
        raise ValueError(f"a variant cannot be named {ALL_VARIANTS!r}: sweeps use it for every variant")
    if variant.name in VARIANTS and VARIANTS[variant.name] is not variant:
        raise ValueError(f"variant {variant.name!r} is registered twice")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r} (known: {', '.join(sorted(VARIANTS))})") from None


def variant_names(requested: list[str]) -> list[str]:
    """A sweep's variant list with `all` replaced by every registered variant (registry order: the
    package's modules by name, then plugins), each name once."""
    names: list[str] = []
    for name in requested:
        names += list(VARIANTS) if name == ALL_VARIANTS else [name]
    return list(dict.fromkeys(names))


def param_grid(name: str, given: dict[str, Any]) -> list[str]:
    """Canonical JSON of each parameter combination of variant `name`, defaults filled in and checked:
    a list value is an axis of its own (sweep.params.moh.top_k=[2,4] plans two points)."""
    variant = get_variant(name)
    keys = sorted(given)
    choices = [given[key] if isinstance(given[key], list) else [given[key]] for key in keys]
    points = (
        variant.check_params(dict(zip(keys, values, strict=True))) for values in itertools.product(*choices)
    )
    return list(dict.fromkeys(canonical_json(point) for point in points))


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "layer"):
        _variant = getattr(importlib.import_module(f"{__name__}.{_module.name}"), "VARIANT", None)
        if _variant is not None:
            register(_variant)

# Variants and backends of your own without editing the package: ATTNSWEEP_PLUGINS=my_pkg.mine,other.module
# names modules imported here, in every process (Ray workers inherit the variable), each defining VARIANT
# (a Variant) and/or BACKEND (a workloads.backends.Backend), or calling register() / register_backend()
# itself. A module that fails is not fatal here: its one-line reason is kept in PLUGIN_ERROR, which the
# sweep's configuration check reports (exit 2) before any trial runs.
PLUGIN_ERROR: str | None = None


def _load_plugin(name: str) -> None:
    try:
        plugin = importlib.import_module(name)
        if getattr(plugin, "VARIANT", None) is not None and plugin.VARIANT.name not in VARIANTS:
            register(plugin.VARIANT)
        if (
            getattr(plugin, "BACKEND", None) is not None
            and getattr(plugin.BACKEND, "name", None) not in BACKENDS
        ):
            register_backend(plugin.BACKEND)
    except Exception as exc:  # an import error, a malformed variant or backend: one line naming the module
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportError(f"{PLUGINS_VARIABLE}: module {name!r}: {reason}") from exc


for _name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
    try:
        _load_plugin(_name)
    except ImportError as _exc:
        PLUGIN_ERROR = PLUGIN_ERROR or str(_exc)

__all__ = [
    "ALL_VARIANTS",
    "PLUGIN_ERROR",
    "VARIANTS",
    "Cost",
    "InvalidPoint",
    "Variant",
    "get_variant",
    "param_grid",
    "register",
    "variant_names",
]
