"""Bad input, all of it: whatever arrives, intake and the step consumer decide — accept it or
refuse it with a reason — and never crash (a crash means ten tracebacks and a dead letter with
no reason). Property tests with hypothesis on the real database; the consumer path (RabbitMQ,
dead queue) is in tests/e2e/test_bad_input_consumer.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.events import CreateEvent, InvalidEvent, parse_event
from pvekvm import catalog, secrets
from pvekvm.config import ROOT, Settings
from pvekvm.limits import FIELD_LENGTHS, FIELD_RANGES
from pvekvm.models import HeldEvent, Operation
from pvekvm.redact import REDACTED, redact_body, safe_reason
from tests.jsonfuzz import JSON, ORDER_BODIES, STEP_BODIES, near_valid_events
from workers.engine import Engine
from workers.intake import handle_order

DB_EXAMPLES = settings(max_examples=150, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow])
GOOD = {"version": 1, "type": "create", "idempotency_key": "k-1", "service_id": 901,
        "client_id": 5, "product": "vps-small", "email": "a@example.com"}


def _reason_is_storable(reason: str) -> None:
    assert reason and reason == safe_reason(reason), reason


# --------------------------------------------------------------------------- the gate

@settings(max_examples=400, deadline=None)
@given(st.one_of(ORDER_BODIES, near_valid_events().map(lambda e: json.dumps(e).encode())))
def test_parse_event_accepts_or_refuses_with_a_storable_reason(body: bytes) -> None:
    try:
        event = parse_event(body)
    except InvalidEvent as exc:
        _reason_is_storable(exc.reason)
        return
    for name, (low, high) in FIELD_RANGES.items():  # what passes fits its column
        value = getattr(event, name, None)
        assert value is None or low <= value <= high
    for name, max_len in FIELD_LENGTHS.items():
        value = getattr(event, name, None)
        assert value is None or len(value) <= max_len
    assert parse_event(event.to_json()) == event


@pytest.mark.parametrize(("field", "value", "words"), [
    ("client_id", 2**32, "client_id"),            # the validator allowed it, INT UNSIGNED not
    ("service_id", 2**32, "service_id"),
    ("client_id", 4294967295, None),              # the largest INT UNSIGNED still fits
])
def test_ids_are_refused_exactly_where_their_column_ends(field, value, words) -> None:
    body = json.dumps({**GOOD, field: value}).encode()
    if words is None:
        assert getattr(parse_event(body), field) == value
        return
    with pytest.raises(InvalidEvent, match=f"field '{words}': out of range"):
        parse_event(body)


def test_a_5000_digit_integer_is_refused_with_a_reason() -> None:
    body = json.dumps(GOOD).replace('"service_id": 901', '"service_id": ' + "9" * 5000)
    with pytest.raises(InvalidEvent, match="number too large: an integer of 5000 digits"):
        parse_event(body.encode())


@pytest.mark.parametrize("host", [
    "localhost", "LocalHost.", "db.localhost", "10.0.0.1", "127.1", "192.168.1.1.", "::1",
    "[::1]", "2001:db8::1", ("a" * 63 + ".") * 3 + "b" * 62,  # 254 octets
    "xn--zz9zz.example", "xn--abc-.example", "ab--cd.example",
])
def test_unusable_host_names_are_refused(host: str) -> None:
    with pytest.raises(InvalidEvent, match="field 'hostname'"):
        parse_event(json.dumps({**GOOD, "hostname": host}).encode())


@pytest.mark.parametrize(("host", "stored"), [
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),   # punycode A-label: kept as ASCII
    ("XN--BCHER-KVA.Example.", "xn--bcher-kva.example"),
    ("1.example", "1.example"),
    (("a" * 63 + ".") * 3 + "b" * 61, ("a" * 63 + ".") * 3 + "b" * 61),  # 253 octets
])
def test_usable_host_names_are_kept_normalised(host: str, stored: str) -> None:
    assert parse_event(json.dumps({**GOOD, "hostname": host}).encode()).hostname == stored


def test_unicode_host_names_must_come_as_punycode() -> None:
    with pytest.raises(InvalidEvent, match="field 'hostname'"):
        CreateEvent(service_id=1, client_id=1, product="p", email="a@b.example",
                    hostname="bücher.example")


# --------------------------------------------------------------------------- redaction

@settings(max_examples=300, deadline=None)
@given(JSON)
def test_redaction_leaves_a_body_without_secrets_byte_for_byte(value) -> None:
    body = json.dumps(value).encode()
    if b"pass" in body.lower() or b"secret" in body.lower() or b"token" in body.lower() \
            or b"key" in body.lower() or b"credential" in body.lower():
        return
    assert redact_body(body) == body


@pytest.mark.parametrize("body", [
    b'{"version":1,"type":"create","password":"hunter2"}',
    b'{"a":[{"Root-Password":"hunter2"}],"api_key":"hunter2","token":{"x":"hunter2"}}',
    b'{"pass\\u0077ord":"hunter2"}',                        # escaped key
    b'{"password": "hunter2", "broken": ',                  # not JSON
    b'user=a&password=hunter2&secret=hunter2',
])
def test_redaction_removes_every_secret_value(body: bytes) -> None:
    out = redact_body(body)
    assert b"hunter2" not in out and REDACTED.encode() in out


# --------------------------------------------------------------------------- intake, engine

@pytest.fixture()
def catalog_db(clean_db, tmp_path):
    secrets.create_key(str(tmp_path / "secret.key"))
    catalog.load_file(ROOT / "config" / "catalog.toml", str(tmp_path / "secret.key"))
    return clean_db


@DB_EXAMPLES
@given(body=ORDER_BODIES)
def test_intake_decides_every_body_without_crashing(catalog_db, body: bytes) -> None:
    """handle_order on the real database: a refusal carries a storable reason, an acceptance
    leaves its operation (or a duplicate's) behind, or holds the event until its service's
    create arrives; nothing raises."""
    outcome = handle_order(body)
    if outcome.dead_reason is not None:
        _reason_is_storable(outcome.dead_reason)
        assert not outcome.publish
        return
    event = parse_event(body)
    if event.type != "backup_schedule":
        op = Operation.get_or_none(Operation.idempotency_key == event.idempotency_key)
        held = HeldEvent.get_or_none(HeldEvent.idempotency_key == event.idempotency_key)
        assert (op or held) is not None
        assert (op or held).service_id == event.service_id


@DB_EXAMPLES
@given(body=STEP_BODIES)
def test_the_step_consumer_decides_every_body_without_crashing(clean_db, database_url,
                                                               body: bytes) -> None:
    """No operation exists: every step message is refused with a reason (a malformed one, or
    an unknown operation) — '1e400' and 5000-digit ids included."""
    engine = Engine(Settings(database_url=database_url, amqp_url="amqp://unused"))
    outcome = engine.handle("ip", body)
    assert outcome.dead_reason is not None and not outcome.publish
    _reason_is_storable(outcome.dead_reason)


def test_intake_decides_again_when_innodb_picks_it_as_a_deadlock_victim(catalog_db,
                                                                        monkeypatch) -> None:
    """A deadlock rolls the whole acceptance back; intake decides once more on what is
    committed (the event is then accepted), instead of giving the message back to its queue,
    where each return counts against the delivery limit. Other database errors still raise."""
    from peewee import OperationalError

    import workers.intake as intake

    real, calls = intake._accept, []

    def deadlocked_once(*args):
        calls.append(1)
        if len(calls) == 1:  # as in a nested atomic(): the savepoint went with the rollback
            try:
                raise OperationalError(1213, "Deadlock found when trying to get lock")
            except OperationalError:
                raise OperationalError(1305, "SAVEPOINT s1 does not exist") from None
        return real(*args)

    monkeypatch.setattr(intake, "_accept", deadlocked_once)
    body = CreateEvent(service_id=4242, occurred_at="2026-01-01T00:00:00Z", client_id=1,
                       product="vps-small", email="d@example.com").to_json()
    outcome = handle_order(body)
    assert outcome.dead_reason is None and len(calls) == 2
    assert Operation.get(Operation.service_id == 4242).kind == "deploy"

    def gone(*args):
        raise OperationalError(2006, "MySQL server has gone away")

    monkeypatch.setattr(intake, "_accept", gone)
    with pytest.raises(OperationalError):
        handle_order(body.replace(b"4242", b"4243"))
