"""The kernels package itself: kernel families are discovered (a new folder becomes `kernels.<name>`
without an edit of kernels/__init__.py, kernels/_families.py), and the modules of kernels/ import
one another without a cycle."""

import ast
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import kernels
from kernels._families import exported_names
from tests.helpers import assert_close

ROOT = Path(__file__).resolve().parents[2]
KERNELS_DIR = ROOT / "kernels"
TOY_FAMILIES = Path(__file__).resolve().parent / "toy_families"  # holds toy_scale/, a test-only family
FAMILY_FOLDERS = ["decode_attention", "flash_attention", "moba_attention", "moh_attention"]


def test_kernels_exports_the_entry_points_of_its_four_families():
    assert list(kernels.FAMILIES) == FAMILY_FOLDERS
    expected = {"is_interpreted"}
    for folder in FAMILY_FOLDERS:
        family = importlib.import_module(f"kernels.{folder}")
        assert kernels.FAMILIES[folder] is family
        for name in family.__all__:
            assert getattr(kernels, name) is getattr(family, name), name
        expected |= set(family.__all__)
    assert set(kernels.__all__) == expected
    # The entry point, not the subpackage of the same name, is what kernels.flash_attention means.
    assert kernels.flash_attention is importlib.import_module("kernels.flash_attention").flash_attention


# Imports `kernels` afresh with extra folders on its search path (argv[1:-1]), as if they were
# inside kernels/, then runs the test-only family's kernel on the device (argv[-1]).
IMPORT_WITH_EXTRA_FOLDERS = """
import json, sys
import torch
from tests.kernels.extra_families import import_kernels_with
kernels = import_kernels_with(*sys.argv[1:-1])
x = torch.randn(50, device=sys.argv[-1])
result = kernels.toy_scale(x, 3.0)
print(json.dumps({"families": list(kernels.FAMILIES), "all": kernels.__all__,
                  "x": x.cpu().tolist(), "result": result.cpu().tolist()}))
"""


def _write_non_families(folder: Path) -> None:
    """Things on the search path that are not families: a private package, a package without
    __all__, and a plain module with __all__."""
    for package, source in (
        ("_private_family", "__all__ = ['private']\nprivate = 1\n"),
        ("no_all", "x = 1\n"),
    ):
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text(source)
    (folder / "plain_module.py").write_text("__all__ = ['plain']\nplain = 1\n")


def test_a_new_family_folder_is_found_exported_and_runs(tmp_path, device):
    """tests/kernels/toy_families/toy_scale (a tiny Triton family) and the non-families of
    `_write_non_families` on kernels' search path: toy_scale is the one new family, and
    kernels.toy_scale runs its kernel (in a subprocess, which imports kernels afresh)."""
    _write_non_families(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WITH_EXTRA_FOLDERS, str(TOY_FAMILIES), str(tmp_path), device],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["families"] == [*FAMILY_FOLDERS, "toy_scale"]
    assert "toy_scale" in found["all"] and not {"private", "plain", "x"} & set(found["all"])
    x = torch.tensor(found["x"])
    assert_close(torch.tensor(found["result"]), x * 3.0, rel_tol=1e-6, name="toy_scale")


def test_a_name_two_families_export_is_an_import_error():
    """Neither family may silently shadow the other (flash_attention and moba_attention each have a
    block_config, which is why it stays out of their __all__)."""
    families = {}
    for name in ("one_family", "other_family"):
        families[name] = types.ModuleType(f"kernels.{name}")
        families[name].__all__ = ["block_config"]
        families[name].block_config = object()
    with pytest.raises(
        ImportError, match="'block_config' is in the __all__ of both one_family and other_family"
    ):
        exported_names(families)


def module_name(path: Path) -> str:
    """kernels/flash_attention/forward.py -> kernels.flash_attention.forward; a package's
    __init__.py is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(folder: Path) -> dict[str, set[str]]:
    """module -> the modules of `folder` it imports by name, anywhere in its source: at module level
    or inside a function (a lazy import hides a cycle, it does not remove it)."""
    modules = {module_name(path): path for path in folder.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from a.b import c` imports module a.b.c when there is one, else module a.b.
                imported |= {
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                }
        graph[name] = imported & modules.keys()
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for imported in sorted(graph[module]):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return []


def test_kernels_modules_import_one_another_without_a_cycle():
    graph = import_graph(KERNELS_DIR)
    assert graph["kernels.flash_attention.interface"] >= {
        "kernels.flash_attention.forward",
        "kernels.flash_attention.backward",
    }
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_find_cycle_finds_a_lazy_import_cycle():
    """The check above can fail: the layout before the interface module (forward kernel module
    importing the backward lazily, the backward importing the forward) is a cycle."""
    graph = {"fwd": {"bwd", "common"}, "bwd": {"fwd", "common"}, "common": set()}
    assert find_cycle(graph) == ["bwd", "fwd", "bwd"]
    assert find_cycle({"fwd": {"common"}, "bwd": {"common"}, "common": set()}) == []
