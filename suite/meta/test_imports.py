"""Meta-tests: the layers import downwards only, read from the source (every import statement,
including those inside functions and `if TYPE_CHECKING:` blocks).

specs/ is the contract: it imports nothing from implementations/ or reports/, so an
implementation or a report can never change what a clause means. No module imports itself
back through a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from attnspec.suite.meta.subprocess_run import ROOT

PACKAGES = ("specs", "implementations", "reports", "suite")


def module_name(path: Path) -> str:
    """`specs/reference/attention.py` -> `attnspec.specs.reference.attention` (a package: its __init__)."""
    parts = ("attnspec", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The project modules `name` imports; `from pkg import sub` counts as importing pkg.sub."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
        found |= {t for t in targets if t == name}  # a module importing itself is a circle too
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a self-import (Tarjan)."""
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_specs_import_no_implementation_or_report():
    """No module in specs/ imports anything from implementations/ or reports/."""
    bad = {
        name: sorted(t for t in targets if t.split(".")[1] in ("implementations", "reports"))
        for name, targets in GRAPH.items()
        if name.split(".")[1] == "specs"
    }
    assert not {k: v for k, v in bad.items() if v}, bad


def test_no_import_circles():
    """No module imports itself back, directly or through other modules."""
    assert circles(GRAPH) == []


def test_the_import_reader_sees_circles_and_layers():
    """The reader finds a planted circle and a planted upward import (so the tests can fail)."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}}) == [["a"]]
    assert "attnspec.specs.clauses" in GRAPH["attnspec.specs.catalog"]
    assert (
        "attnspec.specs.attention" in GRAPH["attnspec.specs.catalog"]
    )  # `from attnspec.specs import attention`
    assert (
        "attnspec.reports.measured" in GRAPH["attnspec.reports.hardware"]
    )  # under TYPE_CHECKING: it counts
