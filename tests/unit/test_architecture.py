"""The tree is the architecture (issue 13): no import cycle among segrec's modules, no upward import.

Walks every module's ``import`` statements (deferred ones inside functions and
``TYPE_CHECKING`` blocks included: a cycle through a deferred import is still a
cycle, only hidden until run time) and fails on a strongly connected component.
"""

from __future__ import annotations

import ast
from pathlib import Path

import segrec

ROOT = Path(segrec.__file__).parent

#: layers, lowest first: a module may import its own layer and the ones below, never above
LAYERS = [
    {"errors", "types", "io", "config", "stages", "state", "progress", "resources"},
    {"data", "split"},
    {"evaluate", "ease"},  # metrics, ranking, EASE's closed form: pure functions of arrays
    {"distributed"},
    {"features"},
    {"segment"},
    {"models"},
    {"route"},
    {"systems", "experiment", "artifacts", "report", "testing"},
    {"serve", "cli"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = f
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for mod, f in mods.items():
        is_pkg = f.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = mod.split(".")
                if node.level:
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in mods else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def _cycles(graph: dict[str, set[str]], mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package -> package edges aside."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if mods[w].name == "__init__.py" and mods[v].name == "__init__.py":
                continue  # a package re-exporting a subpackage is not a dependency back up
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    if len(parts) < 2:
        return None  # the top-level package re-exports the public API
    return next((i for i, names in enumerate(LAYERS) if parts[1] in names), None)


def test_no_import_cycles():
    mods = _modules()
    assert _cycles(_edges(mods), mods) == []


def test_every_module_has_a_layer_and_no_module_imports_upward():
    mods = _modules()
    unplaced = sorted(m for m in mods if m != "segrec" and _layer(m) is None)
    assert unplaced == [], "add these to LAYERS"
    upward = sorted(f"{m} -> {d}" for m, deps in _edges(mods).items() for d in deps
                    if m != "segrec" and d != "segrec" and _layer(d) > _layer(m))
    assert upward == []


def test_the_cycle_finder_finds_a_cycle():
    mods = {"a": Path("a.py"), "b": Path("b.py"), "c": Path("c.py")}
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}, mods) == [["a", "b"]]
