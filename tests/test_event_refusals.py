"""The order events' one declaration (pvekvm/wire/orders.py, pydantic) refuses what the
validator before it refused, with the same reasons, and accepts the same events, normalised the
same way: over the corpus of tests/event_corpus.py (2,453 bodies), against the verdicts captured
from producers/events.py at ec46505 (tests/data/event_refusals.json)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pvekvm.wire.orders import EVENT_TYPES, CreateEvent, InvalidEvent, PowerEvent
from tests.event_corpus import VALID, corpus, digest, verdict

ROOT = Path(__file__).resolve().parent.parent
CAPTURED = json.loads((ROOT / "tests" / "data" / "event_refusals.json").read_text())


# types declared after the capture: their bodies have no verdict
ADDED_SINCE = ("migrate", "language_change", "reinstall_iso", "rescue_on", "rescue_off",
               "firewall_rules_set", "hostname_change")
# fields declared after the capture (bodies with them have no verdict): their refusals are
# tested where they were added (ssh_keys: tests/test_ssh_keys.py)
FIELDS_ADDED_SINCE = {"reinstall": {"ssh_keys"},
                      "reset_password": {"ssh_keys"}, "create": {"ssh_keys", "location"}}


def _as_then(verdict_now: dict) -> dict:
    """A reason listing the known types, as it read before ADDED_SINCE existed."""
    reason = verdict_now.get("reason")
    if reason and "(known: " in reason:
        for added in ADDED_SINCE:
            reason = reason.replace(f"{added}, ", "").replace(f", {added})", ")")
        return {**verdict_now, "reason": reason}
    return verdict_now


def test_every_body_of_the_corpus_gets_the_verdict_it_got_before() -> None:
    bodies = [raw for raw in corpus() if digest(raw) in CAPTURED]
    assert len(bodies) == len(CAPTURED) > 2400
    changed = {}
    for raw in bodies:
        before, now = CAPTURED[digest(raw)], _as_then(verdict(raw))
        if now != before:
            changed[raw[:120].decode("utf-8", "replace")] = (before, now)
    assert changed == {}
    refused = sum(1 for v in CAPTURED.values() if v["reason"] is not None)
    assert refused > 2200  # the corpus is mostly faults: each of them was compared


def test_the_corpus_covers_every_type_and_field() -> None:
    assert set(VALID) == set(EVENT_TYPES)
    for etype, cls in EVENT_TYPES.items():
        assert set(VALID[etype]) | FIELDS_ADDED_SINCE.get(etype, set()) == set(
            cls.model_fields) - {"service_id", "idempotency_key", "occurred_at", "version",
                                 "type"}


@pytest.mark.parametrize("kwargs, reason", [
    ({"service_id": True}, "field 'service_id': expected integer, got boolean true"),
    ({"client_id": 2**32}, "field 'client_id': out of range: integer 4294967296 "
                           "(must be 1..4294967295)"),
    ({"product": "VPS"}, "field 'product': not a slug ([a-z0-9][a-z0-9._-]{0,63}): string of 3 "
                         "characters"),
    ({"hostname": "localhost"}, "field 'hostname': not usable as a host name: string of 9 "
                                "characters: localhost is reserved"),
    ({"bogus": 1}, "field 'bogus': unknown field for event type 'create'"),
    ({"email": None}, "field 'email': must not be null"),
    ({"location": "Frankfurt"}, "field 'location': not a slug ([a-z0-9][a-z0-9._-]{0,63}): "
                                "string of 9 characters"),
    ({"location": ["fra"]}, "field 'location': expected string, got array of 1 items"),
])
def test_building_an_event_applies_the_same_rules(kwargs, reason) -> None:
    good = {"service_id": 5, "client_id": 1, "product": "vps-s", "email": "a@example.com"}
    with pytest.raises(InvalidEvent) as err:
        CreateEvent(**{**good, **kwargs})
    assert err.value.reason == reason


def test_a_built_event_is_normalised_and_keyed_as_a_parsed_one() -> None:
    # ipv6=None as a JSON null would be (the field's type is the normalised bool)
    built = CreateEvent(service_id=5, client_id=1, product="vps-s", email="a@example.com",
                        hostname="Web1.Example.COM.", ipv6=None)  # type: ignore[arg-type]
    assert built.hostname == "web1.example.com" and built.ipv6 is False
    assert built.idempotency_key.startswith("create:5:")
    assert PowerEvent(service_id=5, action="stop").payload() == {"action": "stop"}


def test_the_engine_takes_its_wire_schema_from_the_core_not_from_the_billing_client() -> None:
    """Issue 26 item 4: intake, the API and every other engine module import the event
    declaration from pvekvm.wire; producers/ (billing's client) re-exports it. Allowed: the
    one-line check that a folder named pvekvm does not shadow the package (producers/_shadow
    runs before pvekvm can be imported) and the drain's use of billing's own OrderClient (it
    orders each move as billing would)."""
    importers = []
    for package in ("pvekvm", "steps", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                names = [n for n in names if n not in ("producers._shadow", "producers.api")]
                if any(n == "producers" or n.startswith("producers.") for n in names):
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []
