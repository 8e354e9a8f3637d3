"""The import graph of diffworld has no cycles: between modules, and between its packages.

Imports are read from the source with `ast`, wherever they stand: at module level, inside
functions and under `if TYPE_CHECKING:` alike — a function-level import that closes a cycle is
still a cycle in the design. `from a.b import c` imports `a.b`, and `a.b.c` too where that is a
module. A module's own packages (its `__init__` and those above it, which Python imports before
any module inside them) are not counted as imported by it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import diffworld

ROOT = Path(diffworld.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of diffworld by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The diffworld modules `name` (at `path`) imports."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up from the module's package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    parts = name.split(".")
    enclosing = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {m for m in found if m in known and m != name and m not in enclosing}


def graph(depth: int | None) -> dict[str, set[str]]:
    """Edges between modules (depth None) or between the units `diffworld.x` (depth 2)."""
    mods = modules()
    unit = (lambda m: m) if depth is None else (lambda m: ".".join(m.split(".")[:depth]))  # noqa: E731
    edges: dict[str, set[str]] = {unit(m): set() for m in mods}
    for name, path in mods.items():
        edges[unit(name)].update(unit(t) for t in imports(name, path, mods) if unit(t) != unit(name))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_kind_of_import():
    mods = modules()
    assert "diffworld.model.world_model" in mods and "diffworld.worlds" in mods
    world_model = "diffworld.model.world_model"
    assert "diffworld.diffusion.sampling" in imports(world_model, mods[world_model], mods)
    assert "diffworld.dreamer" in imports("diffworld.rollout", mods["diffworld.rollout"], mods)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_through_others():
    assert cycles(graph(None)) == []


def test_no_two_packages_import_each_other():
    """Between diffworld's packages and top-level modules: model and diffusion, data and worlds,
    the model and the rollout engine each import one way."""
    edges = graph(2)
    assert cycles(edges) == []
    assert "diffworld.rollout" not in edges["diffworld.model"] and "diffworld.dreamer" not in edges["diffworld.model"]
