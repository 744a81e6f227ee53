"""The packages stack in one direction: ``pvekvm`` (the core: models, messaging, Proxmox
client, config, mail, DNS) under ``steps`` under ``workers``; ``producers`` (what billing
runs) needs only the core. The operator CLI (``pvekvm/__main__.py``) and the service API
(``pvekvm/api``) are the apps on top and may use everything. Imports inside functions count;
type-only ones (``if TYPE_CHECKING:``) do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = {Path("pvekvm/__main__.py"), Path("pvekvm/api")}
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
