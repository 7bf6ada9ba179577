"""The house rules of the source tree, checked on its imports (every import, module level or inside a function):
no import cycle among memlab's and pallas_kernels' modules, and the one-way dependencies of the design."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("memlab", "pallas_kernels")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, modules: dict) -> str | None:
    """The most specific module of ours that `name` (a module or a name inside one) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {t for n in names if (t := _resolve(n, modules)) and t != module}
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_dependencies_point_one_way():
    graph = import_graph()
    reaches = lambda module, prefix: sorted(t for t in graph[module] if t == prefix or t.startswith(prefix + "."))
    for module in graph:
        if module.startswith("pallas_kernels"):
            assert not reaches(module, "memlab"), f"{module} imports memlab: the kernels stand alone"
        if module.startswith("memlab.analysis"):
            bad = reaches(module, "memlab.models") + reaches(module, "memlab.train")
            assert not bad, f"{module} imports {bad}: analysis reads run directories only"
        if module.startswith("memlab.reproduce"):
            bad = reaches(module, "memlab.models") + reaches(module, "memlab.data")
            assert not bad, f"{module} imports {bad}: claims train through sweeps and read run directories"
        elif not module.startswith("memlab.cli"):
            bad = reaches(module, "memlab.reproduce")
            assert not bad, f"{module} imports {bad}: reproduce sits on top; nothing below it may import it"
    assert graph["memlab.errors"] == set() and graph["memlab.registry"] == {"memlab.errors"}
