"""The package's shape: folders in layers, no import loop, small modules, and `__all__`
that tells the truth."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "relayhook"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """The relayhook modules this one imports, wherever the import statement stands."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            # `from relayhook.text import units` imports the module relayhook.text.units.
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports() -> None:
    # Guard against a checker that finds nothing: known edges must be there.
    assert "relayhook.model" in GRAPH["relayhook.pipeline"]
    assert "relayhook.text.units" in GRAPH["relayhook.web.api"]
    assert "relayhook.deliver.senders.webhook" in GRAPH["relayhook.deliver.senders.factory"]


def test_no_import_loop() -> None:
    assert cycles(GRAPH) == []


def test_the_checker_finds_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Bottom to top: a module may import its own layer and those below, never one above.
# `relayhook` is the package's own __init__.py.
LAYERS: list[set[str]] = [
    {"relayhook", "model", "errors", "ops", "policy", "text"},
    {"config"},
    {"store"},
    {"receive"},
    {"route"},
    {"deliver"},
    {"pipeline"},
    {"web"},
    {"daemon"},
    {"cli", "__main__"},
]


def folder_of(name: str) -> str:
    """The top-level folder (or module) of relayhook that name belongs to."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, as 'a -> b'."""
    floor = {folder: n for n, layer in enumerate(layers) for folder in layer}
    return sorted(
        f"{a} -> {b}"
        for a, imported in graph.items()
        for b in imported
        if floor[folder_of(b)] > floor[folder_of(a)]
    )


def test_every_folder_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert {folder_of(m) for m in MODULES} - placed == set()


def test_no_folder_imports_a_higher_layer() -> None:
    upward = upward_imports(GRAPH, LAYERS)
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_the_checker_finds_an_upward_import() -> None:
    graph = {"relayhook.config.a": {"relayhook.route.b"}, "relayhook.route.b": set()}
    assert upward_imports(graph, LAYERS) == ["relayhook.config.a -> relayhook.route.b"]


def test_no_sender_imports_the_factory_and_workers_load_no_http_client() -> None:
    senders = [m for m in MODULES if m.startswith("relayhook.deliver.senders.")]
    for name in senders:
        assert "relayhook.deliver.senders.factory" not in GRAPH[name], name
    # The apprise worker process imports its own module only: no aiohttp in it.
    code = (
        "import sys, relayhook.deliver.senders.apprise_worker;"
        "print('aiohttp' in sys.modules, 'litestar' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_module_imports_alone_in_dependency_order() -> None:
    # One fresh interpreter, modules in an order where each comes after what it imports:
    # a loop or an import that only works by accident of order would fail here.
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(GRAPH[name]):
            visit(dep)
        order.append(name)

    for name in sorted(MODULES):
        visit(name)
    code = f"import importlib\nfor m in {order!r}:\n    importlib.import_module(m)\n"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_all_names_what_the_module_has(name: str) -> None:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    if names is None:
        return
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    assert len(set(names)) == len(names)
