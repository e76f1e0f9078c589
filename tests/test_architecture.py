"""The shape of the package: no import cycle, and collectors that depend on data only.

Imports are read from the source with `ast`, so an import under `if TYPE_CHECKING:` or inside a
function counts like any other: a cycle hidden from the interpreter is still one for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import exporter

PACKAGE = Path(exporter.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that the file at `path` imports, wherever the import is."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from exporter.simulator import control` imports the module control, not the
            # package: a submodule's own import of its package is no edge of the design
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    found.discard(_module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the exporter modules it imports (a package's __init__ is its own node)."""
    files = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    modules = set(files)
    return {name: _imports(path, modules) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_imports_under_type_checking() -> None:
    """The check below would pass vacuously if the walk missed imports: prove it reads them."""
    graph = import_graph()
    assert "exporter.engine" in graph["exporter.scrape"]
    assert "exporter.exposition" in graph["exporter.collectors.own"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    assert _cycles(import_graph()) == []


def test_collectors_depend_on_data_not_on_the_engine() -> None:
    graph = import_graph()
    collectors = [name for name in graph if name.startswith("exporter.collectors.")]
    assert collectors, "no collector found"
    for name in collectors:
        assert not graph[name] & {"exporter.engine", "exporter.scrape"}, name
