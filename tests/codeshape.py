"""What the packages' source says about their shape, read with ``ast`` (nothing is imported):
who imports whom, at any level, and how long each function is. Used by the tests of issue 21
and of the import direction in both ``tests/rawpairs`` and ``tests/distill``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rawpairs", "distill")


def module_trees(*packages: str) -> dict[str, ast.Module]:
    """``{"package.module": parsed source}`` of every module of ``packages``."""
    return {
        f"{package}.{path.stem}".removesuffix(".__init__"): ast.parse(
            path.read_text(encoding="utf-8")
        )
        for package in packages
        for path in sorted((ROOT / package).glob("*.py"))
    }


def _nodes_that_run(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``, ``if TYPE_CHECKING:`` bodies (never run) left out."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for s in child.orelse for n in _nodes_that_run(s))
            continue
        yield child
        yield from _nodes_that_run(child)


def imported_names(tree: ast.Module) -> set[str]:
    """Every module a parsed module imports, at any level (functions included), and each
    ``module.name`` of its ``from`` imports; absolute imports only (the packages use no others)."""
    names: set[str] = set()
    for node in _nodes_that_run(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def import_graph(*packages: str) -> dict[str, set[str]]:
    """``{module: modules of ``packages`` it imports}``, function-level imports included."""
    trees = module_trees(*packages)
    return {name: (imported_names(tree) & set(trees)) - {name} for name, tree in trees.items()}


def import_loop(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of ``graph`` as ``[a, b, …, a]``, or ``None`` when it has none."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return [*path, module, imported]
            if imported not in state and (loop := visit(imported, [*path, module])):
                return loop
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (loop := visit(module, [])):
            return loop
    return None


def long_functions(package: str, limit: int = 80) -> list[str]:
    """``module:line name (lines)`` of every function of ``package`` longer than ``limit``."""
    return [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for name, tree in module_trees(package).items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
    ]
