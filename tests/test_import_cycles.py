"""No import cycles inside sparring: the modules form a layered graph (a shared piece lives below its users).

The graph is read from the source with :mod:`ast`, nothing is imported. An edge ``a -> b`` is an import of module
``b`` (or of a name from it) written in ``a``; imports under ``if TYPE_CHECKING:`` are left out (they never run).
Two graphs are checked: the imports that run when the module is imported (module level, including ``try`` and
plain ``if`` blocks), and those plus the imports deferred into functions and methods, since a deferred import that
closes a cycle only hides it (two modules that each need the other are one concept in two files, or lack a lower
module for what they share).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _imports(node.body, deferred)
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _imports(block, deferred)
        elif isinstance(node, ast.With | ast.For | ast.While | ast.ClassDef):
            yield from _imports(node.body, deferred)
            yield from _imports(getattr(node, "orelse", []), deferred)
        elif deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, deferred)


def _owner(name: str, mods: dict[str, tuple[Path, bool]]) -> str | None:
    """The innermost sparring module that ``name`` is or lies in (``a.b.C`` -> ``a.b``)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(deferred: bool, src: Path = SRC, package: str = "sparring") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (with ``deferred``, also inside functions)."""
    mods = _modules(src, package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred):
            if isinstance(node, ast.Import):
                found = [_owner(a.name, mods) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else _owner(base, mods) for a in node.names]
            deps.update(d for d in found if d is not None and d != name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in sorted(graph):
        if state.get(root):
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_reads_relative_deferred_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.low import X\n")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom ..low import X\nfrom . import b\n"
        "if TYPE_CHECKING:\n    from pkg.sub.c import C\n"
        "def f():\n    import pkg.sub.c\n")
    (pkg / "sub" / "b.py").write_text("try:\n    import pkg.low as low\nexcept ImportError:\n    low = None\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub.a\nclass C: ...\n")
    top = import_graph(False, tmp_path, "pkg")
    every = import_graph(True, tmp_path, "pkg")
    assert top["pkg.sub.a"] == {"pkg.low", "pkg.sub.b"} and top["pkg.sub.b"] == {"pkg.low"}
    assert every["pkg.sub.a"] == {"pkg.low", "pkg.sub.b", "pkg.sub.c"}
    assert find_cycle(top) is None
    assert find_cycle(every) == ["pkg.sub.a", "pkg.sub.c", "pkg.sub.a"]


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_sparring_has_no_import_cycle(deferred: bool) -> None:
    cycle = find_cycle(import_graph(deferred))
    assert cycle is None, ("import cycle: " + " -> ".join(cycle or []) + ". Move what the modules share into a "
                           "lower module that both import (see docs/ARCHITECTURE.md).")
