"""One owner of each lifecycle row: the ``services`` row is written only by
pvekvm/service_changes.py (named changes), the ``operations`` row only by workers/operations.py
(its compare-and-swap ``cas`` is called nowhere else: the engine and the scheduler ask for named
transitions such as ``advance``, ``reschedule``, ``renudged``)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pvekvm", "steps", "workers", "producers")
WRITES = {"update", "create", "delete", "insert", "insert_many", "insert_from", "replace",
          "replace_many", "bulk_create", "bulk_update", "get_or_create", "save"}
OWNERS = {"Service": Path("pvekvm/service_changes.py"), "Operation": Path("workers/operations.py")}
TABLES = {"Service": "services", "Operation": "operations"}


def _sql_writes(table: str) -> re.Pattern[str]:
    return re.compile(rf"\b(update|insert\s+into|delete\s+from|replace\s+into)\s+`?{table}\b",
                      re.IGNORECASE)


@cache
def _trees() -> dict[Path, ast.Module]:
    return {f.relative_to(ROOT): ast.parse(f.read_text())
            for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py"))}


def _writes(path: Path, tree: ast.Module, model: str) -> list[str]:
    """Where ``tree`` writes ``model``'s table: a peewee write on the model class
    (``Service.update``), ``.save()`` on something named after it (``ctx.service.save``,
    ``svc.save``) or an SQL statement writing the table."""
    sql = _sql_writes(TABLES[model])
    names = {model.lower(), "svc"} if model == "Service" else {model.lower(), "op"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in WRITES:
            target = node.value
            tail = target.attr if isinstance(target, ast.Attribute) else \
                target.id if isinstance(target, ast.Name) else ""
            if tail == model or (node.attr == "save" and tail.lower() in names):
                found.append(f"{path}:{node.lineno} {tail}.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and sql.search(node.value):
            found.append(f"{path}:{node.lineno} SQL {node.value[:40]!r}")
    return found


def test_only_service_changes_writes_the_services_row():
    wrong = [w for f, tree in _trees().items() if f != OWNERS["Service"]
             for w in _writes(f, tree, "Service")]
    assert wrong == []


def test_only_operations_writes_the_operations_row():
    wrong = [w for f, tree in _trees().items() if f != OWNERS["Operation"]
             for w in _writes(f, tree, "Operation")]
    assert wrong == []


def test_nobody_but_operations_passes_columns_to_its_compare_and_swap():
    callers = []
    for f, tree in _trees().items():
        if f == OWNERS["Operation"]:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else \
                    fn.id if isinstance(fn, ast.Name) else ""
                if name == "cas":
                    callers.append(f"{f}:{node.lineno}")
    assert callers == []


def test_the_check_sees_a_write_where_one_is():
    """The checks above catch each form of write (so their passing means something)."""
    probe = ast.parse('Service.update(node="x").execute()\nctx.service.save(only=[1])\n'
                      'database.execute_sql("UPDATE services SET status = %s")\n'
                      'Operation.update(updated_at=1)\nq = "update `operations` set x = 1"\n')
    where = Path("probe.py")
    assert len(_writes(where, probe, "Service")) == 3
    assert len(_writes(where, probe, "Operation")) == 2
