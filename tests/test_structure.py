"""The package's shape: no import cycles between btcli's modules (imports inside functions count
too) and no module longer than 500 lines.

    python tests/test_structure.py        # prints the cycles and the long modules, if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "btcli"
MAX_LINES = 500


def module_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the btcli modules it imports anywhere in its body."""
    files = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_modules(root: Path = PACKAGE) -> dict[str, int]:
    sizes = {str(p.relative_to(root.parent)): len(p.read_text(encoding="utf-8").splitlines()) for p in root.rglob("*.py")}
    return {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_btcli():
    graph = module_graph()
    assert "btcli.loop" in graph and "btcli.build" in graph["btcli.loop"]  # the graph sees imports
    assert cycles(graph) == []


def test_no_module_above_500_lines():
    assert long_modules() == {}


if __name__ == "__main__":
    print("cycles:", cycles(module_graph()) or "none")
    print(f"modules above {MAX_LINES} lines:", long_modules() or "none")
    sys.exit(1 if cycles(module_graph()) or long_modules() else 0)
