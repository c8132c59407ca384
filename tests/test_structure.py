"""The package's modules import each other without circles, counting imports inside functions too (a circle hidden
in a function is still two modules that cannot be understood, tested or moved apart)."""

from __future__ import annotations

import ast
from pathlib import Path

import hhalign

ROOT = Path(hhalign.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """hhalign module -> the hhalign modules it imports anywhere in its body (package __init__ files left out: they
    only re-export, lazily)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        package = name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name and not modules[target].name == "__init__.py":
                    edges.add(target)
                    break
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_known_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "hhalign.engine.reward_formats" in graph["hhalign.engine.reward"]  # module level, relative
    assert "hhalign.engine.reward_formats" in graph["hhalign.eval.panel"]  # inside a function, relative


def test_no_import_circles_in_the_package():
    assert cycles(import_graph()) == []


def test_the_run_and_the_analysis_are_separate_packages_of_at_most_12_modules():
    for package in ("eval", "stats"):
        modules = sorted(p.stem for p in (ROOT / package).glob("*.py") if p.name != "__init__.py")
        assert 0 < len(modules) <= 12, (package, modules)
