"""Versioned order events: what billing sends to ``{ns}.orders``.

Every event is a JSON object with a common envelope::

    {"version": 1, "type": "create", "idempotency_key": "...", "service_id": 42,
     "occurred_at": "2026-04-10T03:49:18+00:00", ...type-specific fields...}

``parse_event`` is the one gate: it refuses anything that is not exactly a known event (unknown or
extra fields, wrong JSON types — ``true`` is not an integer —, values out of range, hostile host
names) with :class:`InvalidEvent` whose ``reason`` names the offending field. Constructing an event
class directly applies the same rules, so producers cannot build what intake would refuse.

Ranges and lengths come from :mod:`pvekvm.limits`, which tests/test_schema.py checks against the
columns the values land in: what this module accepts always fits the database. Integer literals
longer than ``MAX_INT_DIGITS`` digits are refused while parsing (Python itself refuses to parse
more than 4300 digits, with a ValueError that is not a JSON error).

Host names: RFC 1123, at most 253 octets, not ``localhost`` (or under ``.localhost``), not an IP
address nor any name whose last label is all digits. Internationalised names must be sent as
punycode A-labels (``xn--…``, checked to decode); they are stored and compared in that ASCII form,
case-insensitively. Unicode host names are refused.

Optional fields that are absent (or ``null``) are ``None`` and are left out of :meth:`to_json`.
Host names are normalised (lower case, no trailing dot) and backup days to week order, so that
equal orders serialise, and derive idempotency keys, identically.

Idempotency keys: an event built without one derives it from type, service and fields
(:func:`derive_idempotency_key`). The producers (``OrderClient``, the CLI) instead give the types
in ``REPEATABLE_TYPES`` a fresh key per call (:func:`fresh_idempotency_key`), since the same
suspend or power action may legitimately be ordered again; billing passes its own key to make a
retry of one call idempotent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

from pvekvm import jsonsafe, languages
from pvekvm.limits import FIELD_LENGTHS, FIELD_RANGES, MAX_INT_DIGITS
from pvekvm.validation import is_valid_hostname, service_hostname_problem

EVENT_VERSION = 1
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})
MAX_EVENT_BYTES = 64 * 1024

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
POWER_ACTIONS: tuple[str, ...] = ("start", "stop", "shutdown", "reboot")

_KEY_LEN, _SLUG_LEN = FIELD_LENGTHS["idempotency_key"], FIELD_LENGTHS["product"]
_SNAPSHOT_LEN = FIELD_LENGTHS["name"]
_IDEMPOTENCY_KEY = re.compile(rf"[A-Za-z0-9._:-]{{1,{_KEY_LEN}}}")
_SLUG = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{_SLUG_LEN - 1}}}")
_SNAPSHOT_NAME = re.compile(rf"[A-Za-z][A-Za-z0-9_-]{{1,{_SNAPSHOT_LEN - 1}}}")
_ISO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.iso")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEvent(ValueError):
    """An order event that must not be processed; ``reason`` says why and names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- field checks
# Each check takes (field name, raw value) and returns the normalised value or raises.

Check = Callable[[str, Any], Any]


def _show(value: Any) -> str:
    """What was sent, as a reason says it: its JSON type, then a number, boolean or null as it
    is (it carries no text) and anything else by its size only. A reason never repeats text a
    client sent: reasons go to billing and the logs, and a refused value may be a secret sent
    in the wrong field, or someone else's name."""
    kind = _type_name(value)
    if isinstance(value, str):
        return f"{kind} of {len(value)} characters"
    if isinstance(value, list | tuple):
        return f"{kind} of {len(value)} items"
    if isinstance(value, dict):
        return f"{kind} of {len(value)} fields"
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _excerpt(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _label(name: str) -> str:
    """A field name as it may appear in a reason: a name from the wire is shown escaped and
    cut short (a reason is stored and sent as a header: no control or lone surrogate
    characters, no 60 KB names)."""
    return name if re.fullmatch(r"[a-z0-9_]{1,40}", name) else _excerpt(name)


def _bad(name: str, message: str) -> InvalidEvent:
    return InvalidEvent(f"field '{_label(name)}': {message}")


def _expect(name: str, value: Any, kind: type, label: str) -> None:
    # bool is a subclass of int: `true` is not a service id.
    if type(value) is not kind:
        raise _bad(name, f"expected {label}, got {_show(value)}")


def positive_int(name: str, value: Any) -> int:
    """An id in the range of its column (:data:`pvekvm.limits.FIELD_RANGES`)."""
    _expect(name, value, int, "integer")
    low, high = FIELD_RANGES[name]
    if not low <= value <= high:
        raise _bad(name, f"out of range: {_show(value)} (must be {low}..{high})")
    return value


def _string(name: str, value: Any, max_len: int) -> str:
    _expect(name, value, str, "string")
    if len(value) > max_len:
        raise _bad(name, f"too long: {len(value)} characters (max {max_len})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") decodes from JSON, stores nowhere
        raise _bad(name, "not valid Unicode (lone surrogate)") from None
    return value


def _pattern(regex: re.Pattern[str], max_len: int, what: str) -> Check:
    def check(name: str, value: Any) -> str:
        _string(name, value, max_len)
        if not regex.fullmatch(value):
            raise _bad(name, f"not {what}: {_show(value)}")
        return value
    return check


valid_key = _pattern(_IDEMPOTENCY_KEY, _KEY_LEN,
                     f"1-{_KEY_LEN} characters of [A-Za-z0-9._:-]")
slug = _pattern(_SLUG, _SLUG_LEN, f"a slug ([a-z0-9][a-z0-9._-]{{0,{_SLUG_LEN - 1}}})")
_snapshot_pattern = _pattern(_SNAPSHOT_NAME, _SNAPSHOT_LEN,
                             f"a snapshot name (a letter, then 1-{_SNAPSHOT_LEN - 1} of "
                             "[A-Za-z0-9_-])")


def snapshot_name(name: str, value: Any) -> str:
    """PVE's pve-snapshot-name (format pve-configid, at most 40 characters) without the names
    qemu-server reserves: 'current' (the VM's present state) and 'pending' in any case."""
    value = _snapshot_pattern(name, value)
    if value == "current" or value.lower() == "pending":
        raise _bad(name, f"{value} is a snapshot name Proxmox reserves")
    return value
node_name = _pattern(re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"), 63,
                     "a node name (PVE's pve-node: a host name label)")
iso_name = _pattern(_ISO_NAME, 205, "an ISO file name (no path, [A-Za-z0-9._+-], ending .iso)")


def valid_hostname(name: str, value: Any) -> str:
    """RFC 1123, lower-cased, without trailing dot; see the module docstring for what else is
    refused (localhost, IP addresses, > 253 octets, bad punycode)."""
    max_len = FIELD_LENGTHS["hostname"]
    _string(name, value, max_len + 1)  # + the trailing dot
    # _HOST_CHARS also guards against a trailing newline slipping through a `$` anchor.
    if not _HOST_CHARS.fullmatch(value) or not is_valid_hostname(value):
        raise _bad(name, f"not a valid RFC 1123 host name: {_show(value)}")
    host = value.lower().rstrip(".")
    if len(host) > max_len:
        raise _bad(name, f"too long: {len(host)} octets (max {max_len})")
    problem = service_hostname_problem(host)
    if problem:
        problem = re.sub(r"label '[^']*'", "a label", problem)  # the reason names no label
        raise _bad(name, f"not usable as a host name: {_show(value)}: {problem}")
    return host


def ip_address(name: str, value: Any) -> str:
    """An IPv4 or IPv6 address, in its canonical text form (``2001:DB8::0:1`` → ``2001:db8::1``)."""
    _string(name, value, 45)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _bad(name, f"not an IPv4 or IPv6 address: {_show(value)}") from None


def valid_email(name: str, value: Any) -> str:
    _string(name, value, FIELD_LENGTHS["email"])
    local, at, domain = value.rpartition("@")
    if (not at or not local or len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local)
            or "." not in domain.strip(".") or not _HOST_CHARS.fullmatch(domain)
            or not is_valid_hostname(domain) or domain.endswith(".")):
        raise _bad(name, f"not a valid e-mail address: {_show(value)}")
    return value


def text(max_len: int) -> Check:
    def check(name: str, value: Any) -> str:
        _string(name, value, max_len)
        if _CONTROL.search(value):
            raise _bad(name, "contains control characters")
        return value
    return check


def language_tag(name: str, value: Any) -> str:
    """A client language: a BCP 47-style tag or an English language name, normalised
    (``pt_br`` → ``pt-BR``, ``german`` → ``de``); see :mod:`pvekvm.languages`."""
    _string(name, value, languages.MAX_LENGTH)
    try:
        return languages.normalize(value)
    except ValueError:  # its message quotes the value
        raise _bad(name, f"not a language tag (like 'de', 'pt-BR') or a known language name: "
                         f"{_show(value)}") from None


def boolean(name: str, value: Any) -> bool:
    _expect(name, value, bool, "boolean")
    return value


def timestamp(name: str, value: Any) -> str:
    _string(name, value, 64)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(name, f"not an ISO-8601 timestamp: {_show(value)}") from None
    if parsed.tzinfo is None:
        raise _bad(name, f"timestamp needs a UTC offset (e.g. 'Z' or '+00:00'): {_show(value)}")
    return value


def weekdays(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _bad(name, f"expected array, got {_show(value)}")
    seen: set[str] = set()
    for day in value:
        if type(day) is not str or day not in WEEKDAYS:
            raise _bad(name, f"unknown day {_show(day)} (use {', '.join(WEEKDAYS)})")
        if day in seen:
            raise _bad(name, f"day {day!r} listed twice")
        seen.add(day)
    return tuple(d for d in WEEKDAYS if d in seen)


def one_of(choices: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> str:
        _expect(name, value, str, "string")
        if value not in choices:
            raise _bad(name, f"must be one of {', '.join(choices)}, got {_show(value)}")
        return value
    return check


def _f(check: Check, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"check": check})


# --------------------------------------------------------------------------- events

ENVELOPE_FIELDS: tuple[str, ...] = ("version", "type", "idempotency_key", "service_id",
                                    "occurred_at")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Common envelope. ``idempotency_key=None`` derives one from type, service id and fields."""

    type: ClassVar[str] = ""

    service_id: int = _f(positive_int)
    idempotency_key: str = _f(valid_key, None)
    occurred_at: str | None = _f(timestamp, None)
    version: int = EVENT_VERSION

    def __post_init__(self) -> None:
        if not self.type:
            raise TypeError("Event is abstract: use one of the EVENT_TYPES classes")
        _check_version(self.version)
        for f in fields(self):
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is None:
                continue
            if value is None and f.default is not MISSING:
                object.__setattr__(self, f.name, f.default)
                continue
            object.__setattr__(self, f.name, check(f.name, value))
        if self.idempotency_key is None:
            object.__setattr__(self, "idempotency_key",
                               derive_idempotency_key(self.type, self.service_id, self.payload()))

    @property
    def routing_key(self) -> str:
        return f"order.{self.type}"

    def payload(self) -> dict[str, Any]:
        """The type-specific fields (no envelope), ``None`` left out, tuples as lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ENVELOPE_FIELDS or value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        envelope = {"version": self.version, "type": self.type,
                    "idempotency_key": self.idempotency_key, "service_id": self.service_id}
        if self.occurred_at is not None:
            envelope["occurred_at"] = self.occurred_at
        return {**envelope, **self.payload()}

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON with sorted keys; ``parse_event(e.to_json()) == e``."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


def _order_digest(event_type: str, service_id: int, payload: Mapping[str, Any]) -> str:
    canonical = json.dumps({"type": event_type, "service_id": service_id, **payload},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def derive_idempotency_key(event_type: str, service_id: int, payload: Mapping[str, Any]) -> str:
    """Deterministic key: the same order (type, service, fields) always gets the same key.

    Beware: two *intended* identical orders (suspend, unsuspend, suspend again) then share a key
    and the engine will drop the repeat; that is why the producers give ``REPEATABLE_TYPES`` a
    fresh key instead (:func:`fresh_idempotency_key`)."""
    return f"{event_type}:{service_id}:{_order_digest(event_type, service_id, payload)[:40]}"


def fresh_idempotency_key(event_type: str, service_id: int) -> str:
    """A key no other call gets: for an action that may legitimately be ordered again."""
    return f"{event_type}:{service_id}:{uuid.uuid4().hex}"


def request_hash(event: Event) -> str:
    """SHA-256 (hex) of what the event asks for — type, service, fields; not the key nor the
    time. Intake keeps it with the operation: the same key arriving with another hash is a
    conflict, not a duplicate."""
    return _order_digest(event.type, event.service_id, event.payload())


@dataclass(frozen=True, kw_only=True)
class CreateEvent(Event):
    type: ClassVar[str] = "create"
    client_id: int = _f(positive_int)
    product: str = _f(slug)
    email: str = _f(valid_email)
    hostname: str | None = _f(valid_hostname, None)
    template: str | None = _f(slug, None)
    ipv6: bool = _f(boolean, False)
    language: str | None = _f(language_tag, None)  # the client's; mail in it, English fallback


@dataclass(frozen=True, kw_only=True)
class ChangePackageEvent(Event):
    type: ClassVar[str] = "change_package"
    product: str = _f(slug)


@dataclass(frozen=True, kw_only=True)
class ReinstallEvent(Event):
    type: ClassVar[str] = "reinstall"
    template: str | None = _f(slug, None)


@dataclass(frozen=True, kw_only=True)
class SuspendEvent(Event):
    type: ClassVar[str] = "suspend"


@dataclass(frozen=True, kw_only=True)
class UnsuspendEvent(Event):
    type: ClassVar[str] = "unsuspend"


@dataclass(frozen=True, kw_only=True)
class TerminateEvent(Event):
    type: ClassVar[str] = "terminate"


@dataclass(frozen=True, kw_only=True)
class _SnapshotEvent(Event):
    name: str = _f(snapshot_name)
    description: str | None = _f(text(FIELD_LENGTHS["description"]), None)


@dataclass(frozen=True, kw_only=True)
class SnapshotCreateEvent(_SnapshotEvent):
    type: ClassVar[str] = "snapshot_create"


@dataclass(frozen=True, kw_only=True)
class SnapshotDeleteEvent(_SnapshotEvent):
    type: ClassVar[str] = "snapshot_delete"


@dataclass(frozen=True, kw_only=True)
class SnapshotRollbackEvent(_SnapshotEvent):
    type: ClassVar[str] = "snapshot_rollback"


@dataclass(frozen=True, kw_only=True)
class BackupCreateEvent(Event):
    type: ClassVar[str] = "backup_create"
    note: str | None = _f(text(FIELD_LENGTHS["note"]), None)


@dataclass(frozen=True, kw_only=True)
class BackupDeleteEvent(Event):
    type: ClassVar[str] = "backup_delete"
    backup_id: int = _f(positive_int)


@dataclass(frozen=True, kw_only=True)
class BackupRestoreEvent(Event):
    type: ClassVar[str] = "backup_restore"
    backup_id: int = _f(positive_int)


@dataclass(frozen=True, kw_only=True)
class BackupScheduleEvent(Event):
    """``days`` empty = automatic backups off. Normalised to week order."""

    type: ClassVar[str] = "backup_schedule"
    days: tuple[str, ...] = _f(weekdays)


@dataclass(frozen=True, kw_only=True)
class ResetPasswordEvent(Event):
    type: ClassVar[str] = "reset_password"


@dataclass(frozen=True, kw_only=True)
class IsoMountEvent(Event):
    type: ClassVar[str] = "iso_mount"
    iso: str = _f(iso_name)


@dataclass(frozen=True, kw_only=True)
class IsoUnmountEvent(Event):
    type: ClassVar[str] = "iso_unmount"


@dataclass(frozen=True, kw_only=True)
class PowerEvent(Event):
    type: ClassVar[str] = "power"
    action: str = _f(one_of(POWER_ACTIONS))


@dataclass(frozen=True, kw_only=True)
class RdnsSetEvent(Event):
    """The client's reverse DNS: ``address`` (one the service holds) gets PTR ``hostname``, a
    name the product's ``rdns_policy`` allows (:mod:`pvekvm.rdns_policy`: checked by the API,
    by intake as far as the database goes, and by the step, DNS included)."""

    type: ClassVar[str] = "rdns_set"
    address: str = _f(ip_address)
    hostname: str = _f(valid_hostname)


@dataclass(frozen=True, kw_only=True)
class RdnsResetEvent(Event):
    """The PTR of ``address`` goes back to the service's own host name."""

    type: ClassVar[str] = "rdns_reset"
    address: str = _f(ip_address)


@dataclass(frozen=True, kw_only=True)
class MigrateEvent(Event):
    """An admin's: move the VM to ``node`` (None: placement chooses), live when it can."""

    type: ClassVar[str] = "migrate"
    node: str | None = _f(node_name, None)


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (
    CreateEvent, ChangePackageEvent, ReinstallEvent, SuspendEvent, UnsuspendEvent,
    TerminateEvent, SnapshotCreateEvent, SnapshotDeleteEvent, SnapshotRollbackEvent,
    BackupCreateEvent, BackupDeleteEvent, BackupRestoreEvent, BackupScheduleEvent,
    ResetPasswordEvent, IsoMountEvent, IsoUnmountEvent, PowerEvent, RdnsSetEvent, RdnsResetEvent,
    MigrateEvent,
)}

# Orders that may legitimately be placed again with the same fields (suspend, unsuspend,
# suspend again; X → Y → X packages; a second reinstall): the producers give each call a fresh
# key. Not repeatable: create and terminate (once per service) and backup_schedule (saving the
# same days twice is the same state).
REPEATABLE_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - {"create", "terminate",
                                                             "backup_schedule"}


def producer_key(event_type: str, service_id: int, given: str | None) -> str | None:
    """The key a producer sends: ``given`` when billing passes one, else a fresh key for a
    repeatable type, else None (derived from the fields when the event is built)."""
    if given is not None:
        return given
    if event_type in REPEATABLE_TYPES and type(service_id) is int:
        return fresh_idempotency_key(event_type, service_id)
    return None


# --------------------------------------------------------------------------- parsing

def _check_version(version: Any) -> None:
    if type(version) is not int:
        raise _bad("version", f"expected integer, got {_show(version)}")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, sorted(SUPPORTED_VERSIONS)))
        raise _bad("version", f"unsupported version {version} (supported: {supported})")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _bad(key, "given twice")
        out[key] = value
    return out


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise InvalidEvent(f"number too large: an integer of {digits} digits "
                           f"(max {MAX_INT_DIGITS})")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise InvalidEvent(f"not JSON: {name} is not allowed")


def parse_event(body: bytes | bytearray | str, derive_key: bool = False) -> Event:
    """Decode and validate one order event; raise :class:`InvalidEvent` with a clear reason.
    ``derive_key`` (``POST /v1/events``): an event without ``idempotency_key`` gets one derived
    from its fields when its type is not repeatable (create, terminate, backup_schedule: a
    retry is the same order); a repeatable one must carry billing's own key."""
    if isinstance(body, bytes | bytearray):
        if len(body) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"event too large: {len(body)} bytes (max {MAX_EVENT_BYTES})")
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"not JSON: invalid UTF-8 ({exc.reason})") from None
    elif not isinstance(body, str):
        raise InvalidEvent(f"not JSON: expected bytes, got {type(body).__name__}")
    try:  # bounded: nested past jsonsafe.MAX_DEPTH is refused before decoding
        data = jsonsafe.loads(body, object_pairs_hook=_no_duplicates,
                              parse_constant=_reject_constant, parse_int=_bounded_int)
    except InvalidEvent:
        raise
    except jsonsafe.JsonRefused as exc:
        raise InvalidEvent(f"not JSON: {exc.reason}") from None
    except ValueError as exc:  # anything else json refuses outside JSONDecodeError
        raise InvalidEvent(f"not JSON: {str(exc)[:200]}") from None
    return event_from_dict(data, derive_key)


def event_from_dict(data: Any, derive_key: bool = False) -> Event:
    """Validate an already decoded JSON value (see :func:`parse_event`)."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {_type_name(data)}")
    if "version" not in data:
        raise InvalidEvent("field 'version': missing")
    _check_version(data["version"])
    if "type" not in data:
        raise InvalidEvent("field 'type': missing")
    event_type = data["type"]
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise _bad("type", f"unknown event type {_show(event_type)} "
                           f"(known: {', '.join(sorted(EVENT_TYPES))})")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key != "type" and key not in known:
            raise _bad(key, f"unknown field for event type '{event_type}'")
    kwargs: dict[str, Any] = {}
    derived = derive_key and event_type not in REPEATABLE_TYPES
    for name, f in known.items():
        required = f.default is MISSING or (name == "idempotency_key" and not derived)
        if name not in data or (data[name] is None and not required):
            if required and name == "idempotency_key" and derive_key:
                raise InvalidEvent(
                    f"field 'idempotency_key': missing: a {event_type} may be ordered again on "
                    "purpose, so only billing can tell a retry from a new order: send your own "
                    "key (e.g. the module call's id)")
            if required:
                raise InvalidEvent(f"field '{name}': missing")
            continue
        if data[name] is None:
            raise _bad(name, "must not be null")
        kwargs[name] = data[name]
    return cls(**kwargs)


__all__ = [
    "EVENT_TYPES", "EVENT_VERSION", "POWER_ACTIONS", "SUPPORTED_VERSIONS", "WEEKDAYS",
    "BackupCreateEvent", "BackupDeleteEvent", "BackupRestoreEvent", "BackupScheduleEvent",
    "ChangePackageEvent", "CreateEvent", "Event", "InvalidEvent", "IsoMountEvent",
    "IsoUnmountEvent", "PowerEvent", "RdnsResetEvent", "RdnsSetEvent", "ReinstallEvent",
    "ResetPasswordEvent", "MigrateEvent",
    "SnapshotCreateEvent", "SnapshotDeleteEvent", "SnapshotRollbackEvent", "SuspendEvent",
    "REPEATABLE_TYPES", "TerminateEvent", "UnsuspendEvent", "derive_idempotency_key",
    "event_from_dict", "fresh_idempotency_key", "parse_event", "producer_key", "request_hash",
]
