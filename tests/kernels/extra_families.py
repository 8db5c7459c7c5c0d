"""`kernels` imported afresh with extra folders on its search path, as if they were inside kernels/:
how a test shows that a family kept out of the shipped package (tests/kernels/toy_families, the
worked example's tests/workloads/variants/sigmoid_kernels) is discovered with no edit elsewhere.

Call it first in a fresh process (a subprocess of the test), before anything imports `kernels`:
discovery runs once, when the package is first imported."""

import importlib.util
import sys
from types import ModuleType


def import_kernels_with(*folders: str) -> ModuleType:
    if "kernels" in sys.modules:
        raise RuntimeError(
            "kernels is imported already: its families were discovered without the extra folders"
        )
    spec = importlib.util.find_spec("kernels")
    spec.submodule_search_locations.extend(folders)
    kernels = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = kernels
    spec.loader.exec_module(kernels)
    return kernels
