"""The packages stack in one direction: ``pvekvm`` (the core: models, messaging, Proxmox
client, config, mail, DNS) under ``steps`` under ``workers``; ``producers`` (what billing
runs) needs only the core. The operator CLI (``pvekvm/apps/cli/main.py``) and the service API
(``pvekvm/apps/api``) are the apps on top and may use everything. Imports inside functions count;
type-only ones (``if TYPE_CHECKING:``) do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = {Path("pvekvm/apps/cli/main.py"), Path("pvekvm/apps/api")}
MAY_NOT_IMPORT = {
    "pvekvm": {"steps", "workers", "producers"},
    "steps": {"workers", "producers"},
    "producers": {"steps", "workers"},
}


def _modules(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [f for f in files
            if not any(f.relative_to(ROOT).is_relative_to(app) for app in APPS)]


def _imported(path: Path) -> set[str]:
    """Top-level packages a module imports at run time (``if TYPE_CHECKING:`` blocks, which
    only name types for the checker, are left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    wrong = {str(f.relative_to(ROOT)): sorted(_imported(f) & MAY_NOT_IMPORT[package])
             for f in _modules(package)}
    assert {f: names for f, names in wrong.items() if names} == {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """Our modules ``path`` imports at run time, at its top or inside a function (``from a
    import b`` counts ``a`` and, when it is a module, ``a.b``)."""
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
    return names & known


def test_no_runtime_import_cycle() -> None:
    """No module imports, however late (inside a function), a module that imports it back: a
    cycle works only while its lazy import stays lazy, and hides which module is lower."""
    files = {_module_name(f): f for package in ("pvekvm", "steps", "workers", "producers")
             for f in sorted((ROOT / package).rglob("*.py"))}
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
