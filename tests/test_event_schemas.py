"""The JSON Schemas of every event are generated from the one declaration (pvekvm/wire) and
shipped in schemas/events/: the files are what the models generate, the API documents the
same order schemas, and an order schema accepts every event intake accepts and refuses every
fault a schema can state (over the corpus of tests/event_corpus.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI

from pvekvm.wire import schemas
from pvekvm.wire.billing import BILLING_EVENTS
from pvekvm.wire.orders import EVENT_TYPES
from tests.event_corpus import corpus, verdict

# reasons of the faults a JSON Schema states (type, presence, range, length, pattern, enum)
SCHEMA_FAULTS = re.compile(
    r"field '[^']+': (expected |missing|must not be null|unknown field|out of range|too long: "
    r"\d+ characters|not (1-128 characters|a slug|a snapshot name|an ISO file name)|must be "
    r"one of|unknown day|day '\w+' listed twice|contains control characters|\w+ is a snapshot "
    r"name Proxmox reserves|unsupported version)")

# JSON Schema counts 1.0 as the integer 1; intake (as the orders exchange) wants an integer
# literal: the one fault a schema-valid body may still have (schemathesis_hooks.py says so too)
INTEGRAL_NUMBER = re.compile(r"expected integer, got number -?\d+\.0$")


def test_the_shipped_files_are_what_the_declaration_generates() -> None:
    shipped = {str(p.relative_to(schemas.SHIPPED)): p.read_text()
               for p in sorted(schemas.SHIPPED.glob("*/*.json"))}
    assert shipped == schemas.generated(), "run: python -m pvekvm.wire"
    assert {f"orders/{t}.json" for t in EVENT_TYPES} | {f"billing/{t}.json" for t in
                                                         BILLING_EVENTS} == set(shipped)


def test_every_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    for path in sorted(schemas.SHIPPED.glob("*/*.json")):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == schemas.DRAFT
        assert jsonschema_rs.meta.is_valid(schema), path


def _integral(value: Any) -> Any:
    """FastAPI writes a bound as a float (1.0): the same number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def test_the_api_documents_the_order_body_from_the_same_declaration() -> None:
    from pvekvm.apps.api import routes

    app = FastAPI()
    app.include_router(routes.router)
    body = app.openapi()["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["required"] is True
    documented = _integral(body["content"]["application/json"]["schema"])
    assert documented == schemas.order_body_schema()
    assert sorted(v["properties"]["type"]["const"] for v in documented["oneOf"]) == \
        sorted(EVENT_TYPES)


@pytest.fixture(scope="module")
def order_validators() -> dict[str, jsonschema_rs.Validator]:
    return {t: jsonschema_rs.validator_for(json.loads(
        (schemas.SHIPPED / "orders" / f"{t}.json").read_text()), validate_formats=False)
        for t in EVENT_TYPES}


def test_an_order_schema_accepts_what_intake_accepts_and_refuses_what_a_schema_can_say(
        order_validators) -> None:
    accepted = refused_both = 0
    missed, too_strict = [], []
    for raw in corpus():
        try:
            data = json.loads(raw)
            json.dumps(data, ensure_ascii=False).encode()  # no lone surrogate: a validator's
        except ValueError:                                 # input is valid Unicode
            continue
        if not isinstance(data, dict) or not isinstance(data.get("type"), str) \
                or data["type"] not in EVENT_TYPES:
            continue
        valid = order_validators[data["type"]].is_valid(data)
        reason = verdict(raw)["reason"]
        if reason is None:
            accepted += 1
            if not valid:
                too_strict.append(raw[:160])
        elif SCHEMA_FAULTS.match(reason) and not INTEGRAL_NUMBER.search(reason):
            refused_both += 1
            if valid:
                missed.append((reason, raw[:160]))
    assert too_strict == [] and missed == []
    assert accepted > 150 and refused_both > 1500
