"""Kernel families are found, not listed: each subpackage of `kernels` whose __init__.py defines
__all__ is one family, and the names in its __all__ become attributes of `kernels` (workloads call
them as `workloads.backends.load_kernels().<name>`). A new family is one new folder, and
kernels/__init__.py stays as it is: a hand-kept list there would be one more place to forget.

A family may also declare the configurations `python -m kernels.aot` compiles for it: a dict
`AOT_CASES` in its __init__.py, {case name: a function returning its launches}, each case listed
as "<folder>/<case name>" (kernels/aot_cases.py collects them). So a new family's ahead-of-time
check lives in its own folder too.

Plain modules (_common, aot, aot_cases), subpackages named with a leading underscore and
subpackages without __all__ are not families."""

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any


def find_families(package_name: str, search_path: Iterable[str]) -> dict[str, ModuleType]:
    """folder name -> family package (imported), for the subpackages of `package_name` found on
    `search_path` (the package's __path__), in the order pkgutil lists them (by name per folder)."""
    families = {}
    for entry in pkgutil.iter_modules(search_path):
        if not entry.ispkg or entry.name.startswith("_"):
            continue
        package = importlib.import_module(f"{package_name}.{entry.name}")
        if hasattr(package, "__all__"):
            families[entry.name] = package
    return families


def exported_names(families: dict[str, ModuleType]) -> dict[str, Any]:
    """name -> object for every name in every family's __all__. A name that two families export is
    an ImportError naming both: neither may silently shadow the other."""
    exported: dict[str, Any] = {}
    exported_by: dict[str, str] = {}
    for family_name, family in families.items():
        for name in family.__all__:
            if name in exported:
                raise ImportError(
                    f"kernels: {name!r} is in the __all__ of both {exported_by[name]} and {family_name}"
                )
            exported[name] = getattr(family, name)
            exported_by[name] = family_name
    return exported


def family_aot_cases(families: dict[str, ModuleType]) -> dict[str, Callable[[], list]]:
    """Case name -> launch builder, for every case in every family's AOT_CASES (optional), named
    "<folder>/<case>": the prefix keeps two families' names apart and selects them ('toy_scale/*')."""
    return {
        f"{family_name}/{case}": build
        for family_name, family in families.items()
        for case, build in getattr(family, "AOT_CASES", {}).items()
    }
