"""Order events: parsing, validation and serialisation (pure, no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from producers.events import (
    EVENT_TYPES,
    BackupScheduleEvent,
    CreateEvent,
    InvalidEvent,
    MigrateEvent,
    PowerEvent,
    SuspendEvent,
    derive_idempotency_key,
    parse_event,
)

ENVELOPE = {"version": 1, "idempotency_key": "whmcs:call-1", "service_id": 5546}

# One valid example per type (type-specific fields only).
EXAMPLES: dict[str, dict[str, Any]] = {
    "create": {"client_id": 17, "product": "vps-s", "email": "client@example.com",
               "hostname": "web1.example.com", "template": "debian-12", "ipv6": True},
    "change_package": {"product": "vps-m"},
    "reinstall": {"template": "ubuntu-24.04"},
    "suspend": {},
    "unsuspend": {},
    "terminate": {},
    "snapshot_create": {"name": "before_upgrade", "description": "before apt upgrade"},
    "snapshot_delete": {"name": "before_upgrade"},
    "snapshot_rollback": {"name": "before_upgrade"},
    "backup_create": {"note": "manual"},
    "backup_delete": {"backup_id": 9},
    "backup_restore": {"backup_id": 9},
    "backup_schedule": {"days": ["mon", "thu"]},
    "reset_password": {},
    "iso_mount": {"iso": "Debian-12.5.0-amd64-netinst.iso"},
    "iso_unmount": {},
    "power": {"action": "reboot"},
    "migrate": {"node": "pve3"},
    "reinstall_iso": {"iso": "Debian-12.5.0-amd64-netinst.iso"},
    "rescue_on": {},
    "rescue_off": {},
    "rdns_set": {"address": "192.0.2.10", "hostname": "mail.client.example"},
    "rdns_reset": {"address": "2001:db8::10"},
    "language_change": {"language": "he"},
    "firewall_rules_set": {"rules": [{"direction": "in", "action": "ACCEPT", "proto": "tcp",
                                      "dport": "22,80:90", "source": "192.0.2.0/24",
                                      "enable": True, "comment": "ssh and web"}]},
    "hostname_change": {"hostname": "web2.example.com"},
}


def body(event_type: str = "create", **changes: Any) -> bytes:
    data: dict[str, Any] = {**ENVELOPE, "type": event_type, **EXAMPLES[event_type]}
    for key, value in changes.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


DROP = object()


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidEvent) as err:
        parse_event(raw)
    return err.value.reason


def test_examples_cover_every_type() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_type_parses_and_round_trips(event_type: str) -> None:
    event = parse_event(body(event_type, occurred_at="2026-04-10T03:49:18+00:00"))
    assert event.type == event_type
    assert isinstance(event, EVENT_TYPES[event_type])
    assert event.routing_key == f"order.{event_type}"
    assert event.service_id == 5546 and event.idempotency_key == "whmcs:call-1"
    raw = event.to_json()
    assert parse_event(raw) == event
    assert json.loads(raw) == json.loads(body(event_type, occurred_at="2026-04-10T03:49:18+00:00"))


def test_to_json_is_compact_and_sorted() -> None:
    raw = parse_event(body("power")).to_json()
    assert b" " not in raw
    keys = list(json.loads(raw))
    assert keys == sorted(keys)
    assert raw == (b'{"action":"reboot","idempotency_key":"whmcs:call-1","service_id":5546,'
                   b'"type":"power","version":1}')


def test_optional_fields_may_be_absent_or_null() -> None:
    event = parse_event(body("create", hostname=DROP, template=None, ipv6=DROP))
    assert isinstance(event, CreateEvent)
    assert event.hostname is None and event.template is None and event.ipv6 is False
    assert b"hostname" not in event.to_json() and b"template" not in event.to_json()
    assert parse_event(event.to_json()) == event


def test_hostname_and_days_are_normalised() -> None:
    event = parse_event(body("create", hostname="Web1.Example.COM."))
    assert event.hostname == "web1.example.com"  # type: ignore[attr-defined]
    sched = parse_event(body("backup_schedule", days=["sun", "mon"]))
    assert isinstance(sched, BackupScheduleEvent) and sched.days == ("mon", "sun")
    assert parse_event(body("backup_schedule", days=[])).days == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("raw", "expected"), [
    (b"", "not JSON"),
    (b"not json at all", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"version": 1,', "not JSON"),
    (b'{"version": NaN}', "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"create"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"type": "create"}', "field 'version': missing"),
    (b'{"version": 2, "type": "create"}', "field 'version': unsupported version 2"),
    (b'{"version": "1", "type": "create"}', "field 'version': expected integer"),
    (b'{"version": true, "type": "create"}', "field 'version': expected integer"),
    (b'{"version": 1}', "field 'type': missing"),
    (b'{"version": 1, "type": "destroy_everything"}', "field 'type': unknown event type"),
    (b'{"version": 1, "type": 7}', "field 'type': unknown event type"),
    (b'{"version": 1, "version": 1, "type": "suspend"}', "field 'version': given twice"),
])
def test_envelope_errors(raw: bytes, expected: str) -> None:
    assert expected in reason_of(raw)


def test_oversized_body_refused() -> None:
    assert "too large" in reason_of(b" " * (64 * 1024 + 1))


def test_deeply_nested_json_refused() -> None:
    assert "not JSON" in reason_of(b"[" * 30000 + b"]" * 30000)


@pytest.mark.parametrize(("event_type", "missing"), [
    ("create", "service_id"), ("create", "idempotency_key"), ("create", "client_id"),
    ("create", "product"), ("create", "email"), ("change_package", "product"),
    ("snapshot_create", "name"), ("backup_delete", "backup_id"), ("backup_restore", "backup_id"),
    ("backup_schedule", "days"), ("iso_mount", "iso"), ("power", "action"),
])
def test_missing_field_named(event_type: str, missing: str) -> None:
    assert reason_of(body(event_type, **{missing: DROP})) == f"field '{missing}': missing"


def test_null_required_field_named() -> None:
    assert reason_of(body("create", product=None)) == "field 'product': must not be null"


@pytest.mark.parametrize("event_type", ["create", "suspend", "power"])
def test_unknown_extra_field_named(event_type: str) -> None:
    assert "field 'vmid': unknown field" in reason_of(body(event_type, vmid=100))


def test_field_of_another_type_is_unknown() -> None:
    assert "field 'backup_id': unknown field" in reason_of(body("suspend", backup_id=3))


@pytest.mark.parametrize(("event_type", "field", "value", "expected"), [
    # wrong JSON types; bool is not int
    ("create", "service_id", True, "expected integer, got boolean"),
    ("create", "service_id", "5546", "expected integer, got string"),
    ("create", "service_id", 5546.0, "expected integer, got number"),
    ("create", "client_id", False, "expected integer, got boolean"),
    ("backup_delete", "backup_id", True, "expected integer, got boolean"),
    ("create", "ipv6", 1, "expected boolean, got integer"),
    ("create", "ipv6", "yes", "expected boolean"),
    ("create", "product", 3, "expected string, got integer"),
    ("create", "email", ["a@b.example"], "expected string, got array"),
    ("create", "idempotency_key", 12, "expected string"),
    ("backup_schedule", "days", "mon", "expected array, got string"),
    ("backup_schedule", "days", {"mon": True}, "expected array, got object"),
    # out of range
    ("create", "service_id", 0, "out of range"),
    ("create", "service_id", -1, "out of range"),
    ("create", "service_id", 2**63, "out of range"),
    ("create", "client_id", 0, "out of range"),
    ("backup_restore", "backup_id", -5, "out of range"),
    # bad values
    ("create", "idempotency_key", "", "not 1-128 characters"),
    ("create", "idempotency_key", "k" * 129, "too long"),
    ("create", "idempotency_key", "has space", "not 1-128 characters"),
    ("create", "idempotency_key", "key\n", "not 1-128 characters"),
    ("create", "product", "VPS", "not a slug"),
    ("create", "product", "-vps", "not a slug"),
    ("create", "product", "a" * 65, "too long"),
    ("create", "template", "../../etc", "not a slug"),
    ("reinstall", "template", "debian 12", "not a slug"),
    ("create", "email", "no-at-sign", "not a valid e-mail"),
    ("create", "email", "a@localhost", "not a valid e-mail"),
    ("create", "email", "a@b.example\r\nBcc: x@y.example", "not a valid e-mail"),
    ("create", "email", "a b@c.example", "not a valid e-mail"),
    ("create", "email", "@c.example", "not a valid e-mail"),
    ("create", "occurred_at", "yesterday", "not an ISO-8601 timestamp"),
    ("create", "occurred_at", "2026-04-10T03:49:18", "needs a UTC offset"),
    ("snapshot_create", "name", "1st", "not a snapshot name"),
    ("snapshot_create", "name", "a", "not a snapshot name"),
    ("snapshot_create", "name", "snap shot", "not a snapshot name"),
    ("snapshot_create", "name", "a" * 41, "too long"),
    ("snapshot_delete", "name", "current\n", "not a snapshot name"),
    ("snapshot_create", "description", "d" * 256, "too long"),
    ("snapshot_create", "description", "line\nbreak", "control characters"),
    ("backup_create", "note", "n" * 256, "too long"),
    ("backup_schedule", "days", ["mon", "mon"], "listed twice"),
    ("backup_schedule", "days", ["monday"], "unknown day"),
    ("backup_schedule", "days", [1], "unknown day"),
    ("iso_mount", "iso", "../../etc/shadow.iso", "not an ISO file name"),
    ("iso_mount", "iso", "dir/file.iso", "not an ISO file name"),
    ("iso_mount", "iso", "dir\\file.iso", "not an ISO file name"),
    ("iso_mount", "iso", "file.img", "not an ISO file name"),
    ("iso_mount", "iso", ".hidden.iso", "not an ISO file name"),
    ("iso_mount", "iso", "local:iso/file.iso", "not an ISO file name"),
    ("power", "action", "destroy", "must be one of start, stop, shutdown, reboot"),
    ("power", "action", "START", "must be one of"),
])
def test_bad_value_named(event_type: str, field: str, value: Any, expected: str) -> None:
    reason = reason_of(body(event_type, **{field: value}))
    assert reason.startswith(f"field '{field}': "), reason
    assert expected in reason, reason


@pytest.mark.parametrize("host", [
    "evil;rm -rf /", "a..b", "-x", "x-", "a.-b.c", "$(reboot)", "host name", "host_name",
    "h" * 300, "a." * 127 + "a", "l" * 64 + ".example.com", "héllo.example", "xn--\u00e9",
    "web1.example.com\n", "web1\x00.example.com", "", ".", "..", "a/b", "*.example.com",
])
def test_hostile_hostname_refused(host: str) -> None:
    reason = reason_of(body("create", hostname=host))
    assert reason.startswith("field 'hostname': "), reason


@pytest.mark.parametrize("host", ["web1", "web-1.example.com", "a" * 63 + ".example.com",
                                  "1.2.example", "xn--bcher-kva.example"])
def test_good_hostname_accepted(host: str) -> None:
    assert parse_event(body("create", hostname=host)).hostname == host  # type: ignore[attr-defined]


def test_constructor_applies_the_same_rules() -> None:
    with pytest.raises(InvalidEvent, match="field 'hostname'"):
        CreateEvent(service_id=1, client_id=1, product="vps", email="a@b.example",
                    hostname="a..b")
    with pytest.raises(InvalidEvent, match="field 'service_id'"):
        SuspendEvent(service_id=True)
    with pytest.raises(InvalidEvent, match="field 'version'"):
        SuspendEvent(service_id=1, version=2)  # type: ignore[arg-type]  # refused at runtime


def test_derived_idempotency_key_is_deterministic_and_field_sensitive() -> None:
    a = PowerEvent(service_id=7, action="reboot")
    b = PowerEvent(service_id=7, action="reboot", occurred_at="2026-04-10T03:49:18Z")
    c = PowerEvent(service_id=7, action="stop")
    d = PowerEvent(service_id=8, action="reboot")
    assert a.idempotency_key == b.idempotency_key  # the time is not part of the order
    assert len({a.idempotency_key, c.idempotency_key, d.idempotency_key}) == 3
    assert a.idempotency_key.startswith("power:7:")
    assert parse_event(a.to_json()) == a
    # normalisation first: the same schedule in another order is the same order
    # a list, as billing's JSON has it (the field's type is the normalised tuple)
    assert (BackupScheduleEvent(service_id=1, days=["thu", "mon"]).idempotency_key  # type: ignore[arg-type]
            == BackupScheduleEvent(service_id=1, days=("mon", "thu")).idempotency_key)
    # and the same order as another type is not
    assert derive_idempotency_key("suspend", 7, {}) != derive_idempotency_key("unsuspend", 7, {})


def test_explicit_idempotency_key_kept() -> None:
    assert SuspendEvent(service_id=1, idempotency_key="whmcs:991").idempotency_key == "whmcs:991"


def test_events_are_frozen_and_hashable() -> None:
    event = parse_event(body("backup_schedule"))
    with pytest.raises(ValidationError, match="frozen"):
        event.service_id = 2
    assert hash(event) == hash(parse_event(body("backup_schedule")))


def test_non_ascii_text_round_trips() -> None:
    event = parse_event(body("snapshot_create", description="vor dem Update — ünïcødé"))
    assert parse_event(event.to_json()) == event
    assert "ünïcødé".encode() in event.to_json()


MARK = "hunter2Q"  # in every refused value below: no reason may repeat it


@pytest.mark.parametrize(("event_type", "field", "value"), [
    ("create", "hostname", f"{MARK}.example..com"),
    ("create", "hostname", f"ab--{MARK}.example"),  # the label is quoted by its rule
    ("create", "email", f"{MARK}@"),
    ("create", "product", f"{MARK}!"),
    ("create", "template", f"/{MARK}"),
    ("create", "client_id", f"{MARK}"),
    ("create", "ipv6", [MARK]),
    ("create", "idempotency_key", f"{MARK} with spaces"),
    ("create", "language", f"{MARK}-{MARK}-{MARK}"),
    ("create", "occurred_at", f"{MARK}"),
    ("power", "action", MARK),
    ("backup_schedule", "days", [MARK]),
    ("snapshot_create", "name", f"{MARK}/x"),
    ("rdns_set", "address", MARK),
    ("iso_mount", "iso", f"../{MARK}.iso"),
    ("suspend", "type", MARK),
])
def test_a_reason_names_the_field_and_the_rule_never_the_value(event_type, field, value):
    """Reasons go to billing and the logs: a refused value (a host name, a key, a secret sent
    in the wrong field) is described by its type and size, never repeated."""
    reason = reason_of(body(event_type, **{field: value}))
    assert f"field '{field}'" in reason, reason
    assert MARK not in reason, reason


def test_a_reason_shows_a_number_as_it_is() -> None:
    reason = reason_of(body("create", service_id=2**40))
    assert "out of range: integer 1099511627776" in reason, reason
    assert "got string of 4 characters" in reason_of(body("create", service_id="5546"))


@pytest.mark.parametrize("depth", [33, 30000])
def test_nesting_past_the_bound_is_refused_with_its_depth(depth: int) -> None:
    raw = body("create", hostname="@H@").replace(b'"@H@"', b"[" * depth + b"]" * depth)
    assert reason_of(raw) == f"not JSON: nested {depth + 1} levels deep (max 32)"  # + the event


@pytest.mark.parametrize("node", ["pve3/../../etc", "a" * 64, "-pve", "pve3 ", 3, True, ""])
def test_a_migrate_names_a_node_or_is_refused_naming_the_field(node: object) -> None:
    body = json.dumps({**ENVELOPE, "type": "migrate", "node": node})
    with pytest.raises(InvalidEvent, match="field 'node'"):
        parse_event(body)
    event = parse_event(json.dumps({**ENVELOPE, "type": "migrate"}))
    assert isinstance(event, MigrateEvent) and event.node is None
