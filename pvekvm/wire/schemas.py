"""JSON Schemas (draft 2020-12) of every event, generated from the models of
:mod:`pvekvm.wire.orders` and :mod:`pvekvm.wire.billing`: one file per type under
``schemas/events/orders/`` (billing → engine) and ``schemas/events/billing/`` (engine →
billing), and the request body of ``POST /v1/events`` (one of the order types, by ``type``).

An order's schema says what intake accepts as far as a schema can: types, ranges, lengths,
patterns, no other fields, optional fields absent or null. Rules beyond it (a host name that is
``localhost``, an e-mail's domain, a language name) are stated as ``format`` and description and
checked by intake, whose refusal names the rule. ``python -m pvekvm.wire`` writes the files;
tests/test_event_schemas.py holds them equal to what this module generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pvekvm.wire.billing import BILLING_EVENTS
from pvekvm.wire.orders import EVENT_TYPES, Event

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "events"


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Property titles pydantic makes from names ('Service Id') say nothing the name does not;
    a null default says nothing an optional field does not."""
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if "default" in prop and prop["default"] is None:
            del prop["default"]
    return schema


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop and {"type": "null"} in prop["anyOf"]:
        return prop
    default = prop.pop("default", None)
    out: dict[str, Any] = {"anyOf": [prop, {"type": "null"}]}
    if default is not None:
        out["default"] = default
    return out


def order_schema(cls: type[Event]) -> dict[str, Any]:
    """One order type as it travels: the envelope's version, type and key are required (a key
    is only derived when an event is built in Python), optional fields may be null."""
    schema = _without_titles(cls.model_json_schema(mode="validation"))
    props = schema["properties"]
    for name in ("version", "type", "idempotency_key"):
        props[name].pop("default", None)
    wire_required = ["version", "type", "idempotency_key"]
    required = wire_required + [n for n in schema.get("required", []) if n not in wire_required]
    for name, prop in props.items():
        if name not in required:
            props[name] = _nullable(prop)
    schema["required"] = required
    return {"$schema": DRAFT, **schema}


def billing_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """One event to billing: every field it carries is declared; others may come in later
    versions of the engine (optional ones), so they are allowed."""
    return {"$schema": DRAFT, **_without_titles(cls.model_json_schema(mode="serialization"))}


def order_body_schema() -> dict[str, Any]:
    """The request body of ``POST /v1/events``: exactly one of the order types."""
    variants = []
    for _, cls in sorted(EVENT_TYPES.items()):
        variant = order_schema(cls)
        variant.pop("$schema")
        variants.append(variant)
    return {"description": "an order event, exactly as on the orders exchange (one per type: "
            "schemas/events/orders/<type>.json)", "oneOf": variants}


def generated() -> dict[str, str]:
    """Every shipped file: path under ``schemas/events/`` → its text."""
    files = {f"orders/{t}.json": order_schema(cls) for t, cls in EVENT_TYPES.items()}
    files.update({f"billing/{t}.json": billing_schema(cls) for t, cls in BILLING_EVENTS.items()})
    return {path: json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
            for path, schema in sorted(files.items())}


def write(root: Path = SHIPPED) -> list[Path]:
    """(Re)write the shipped files; files of types that no longer exist are removed."""
    files = generated()
    for old in root.glob("*/*.json"):
        if str(old.relative_to(root)) not in files:
            old.unlink()
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written
