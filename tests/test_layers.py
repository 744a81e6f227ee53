"""The layers, bottom up: ``pvekvm`` (the core: models, messaging, Proxmox client, config, mail,
DNS, the event schemas, the catalog cache) under ``steps`` under ``workers`` under the apps
(``pvekvm.apps``: the service API and the operator CLI, launched by ``python -m pvekvm``, whose
``pvekvm/__main__.py`` is the CLI app's entry point). ``producers`` (what billing runs) needs only
the core. A module imports its own layer and those below, never one above; imports inside
functions count, type-only ones (``if TYPE_CHECKING:``) do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pvekvm", "steps", "workers", "producers")
MAY_IMPORT = {
    "core": {"core"},
    "steps": {"core", "steps"},
    "workers": {"core", "steps", "workers", "producers"},
    "producers": {"core", "producers"},
    "apps": {"core", "steps", "workers", "producers", "apps"},
}


def layer_of(module: str) -> str:
    if module in ("pvekvm.apps", "pvekvm.__main__") or module.startswith("pvekvm.apps."):
        return "apps"
    top = module.split(".")[0]
    return "core" if top == "pvekvm" else top


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """Our modules ``path`` imports at run time, at its top or inside a function (``from a
    import b`` counts ``a`` and, when it is a module, ``a.b``)."""
    return _imported_names(path) & known


def _imported_names(path: Path) -> set[str]:
    """Every dotted name ``path`` imports at run time (``if TYPE_CHECKING:`` left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def _files() -> dict[str, Path]:
    return {_module_name(f): f for package in PACKAGES
            for f in sorted((ROOT / package).rglob("*.py"))}


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_no_module_imports_a_layer_above_its_own(layer: str) -> None:
    files = _files()
    wrong = {m: sorted(i for i in _imported_modules(f, set(files))
                       if layer_of(i) not in MAY_IMPORT[layer])
             for m, f in files.items() if layer_of(m) == layer}
    assert {m: names for m, names in wrong.items() if names} == {}


def test_every_module_has_a_layer_and_each_layer_modules() -> None:
    assert {layer_of(m) for m in _files()} == set(MAY_IMPORT)


def test_no_runtime_import_cycle() -> None:
    """No module imports, however late (inside a function), a module that imports it back: a
    cycle works only while its lazy import stays lazy, and hides which module is lower."""
    files = _files()
    graph = {m: _imported_modules(f, set(files)) - {m} for m, f in files.items()}
    cycles = []
    for start in graph:  # a path from a module's imports back to it
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo += graph[m]
    assert cycles == []


def test_bench_imports_no_test_module() -> None:
    """The benchmarks share workers/testing/ with the tests; they never import ``tests``."""
    wrong = {str(f.relative_to(ROOT)): sorted(n for n in _imported_names(f)
                                              if n.split(".")[0] == "tests")
             for f in sorted((ROOT / "bench").rglob("*.py"))}
    assert {f: names for f, names in wrong.items() if names} == {}
