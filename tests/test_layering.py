"""The package's layering, read from its source with `ast` (nothing is imported): no import cycle among its
modules, function-level imports included, and no core module that imports napari or Qt, so the library, the
command line and the cluster path run headless."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "napari_convnp"
# Cycles being removed elsewhere, each as the set of its modules; the lead empties this as they go.
GUI_LIBRARIES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")


def is_gui_module(name: str) -> bool:
    """The napari glue: `_widget`, `_napari` and the files split from them (named with a leading '_'), `demo`."""
    return name == "demo" or (name.startswith("_") and not name.startswith("__"))


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` but those under `if TYPE_CHECKING:` (imports for annotations never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports_of(package: Path) -> dict[str, tuple[set[str], set[str]]]:
    """For each module of a flat package: (the package's modules it imports, the top-level outside packages it
    imports), from every import statement it runs, at module level or inside a function."""
    modules = {p.stem for p in package.glob("*.py")}
    found = {}
    for path in sorted(package.glob("*.py")):
        own, outside = set(), set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == package.name and len(parts) > 1:
                        own.add(parts[1])
                    elif parts[0] != package.name:
                        outside.add(parts[0])
            elif isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".") if node.module else []
                if node.level == 0 and parts[0] != package.name:
                    outside.add(parts[0])
                    continue
                inner = parts[1:] if node.level == 0 else parts
                if inner:
                    own.add(inner[0])
                else:  # from . import a, b
                    own.update(alias.name for alias in node.names if alias.name in modules)
        own.discard("__init__")
        found[path.stem] = (own & modules, outside)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path (a → b → … → a) through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path from the group's first module back to it, inside the group (breadth first: a shortest one)."""
    start = min(group)
    paths = [[start]]
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & group):
            if target == start:
                return path + [start]
            if target not in path:
                paths.append(path + [target])
    raise AssertionError(f"no closed path through {sorted(group)}")


def package_graph() -> dict[str, set[str]]:
    return {name: own for name, (own, _) in imports_of(PACKAGE).items()}


def test_no_import_cycle_among_the_package_modules():
    found = [" → ".join(path) for path in cycles(package_graph())]
    assert not found, "import cycles: " + "; ".join(found)


def test_core_modules_import_neither_napari_nor_qt_nor_the_gui_modules():
    bad = []
    for name, (own, outside) in imports_of(PACKAGE).items():
        if is_gui_module(name):
            continue
        bad += [f"{name} imports {lib}" for lib in sorted(outside) if lib in GUI_LIBRARIES]
        bad += [f"{name} imports {other}" for other in sorted(own) if is_gui_module(other)]
    assert not bad, "; ".join(bad)


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from . import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    graph = {name: own for name, (own, _) in imports_of(package).items()}
    assert graph["d"] == set()  # an import for annotations only is no edge
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_a_core_module_importing_qt_is_caught(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "core.py").write_text("def show():\n    from qtpy.QtWidgets import QWidget\n")
    (package / "_widget.py").write_text("import napari\n")
    found = imports_of(package)
    assert "qtpy" in found["core"][1] and not is_gui_module("core") and is_gui_module("_widget")
