"""Versioned order events: what billing sends to ``{ns}.orders`` (or ``POST /v1/events``).

Every event is a JSON object with a common envelope::

    {"version": 1, "type": "create", "idempotency_key": "...", "service_id": 42,
     "occurred_at": "2026-04-10T03:49:18+00:00", ...type-specific fields...}

Each type is declared once, as a pydantic model below: its fields' types and constraints are
what intake enforces, what ``OrderClient`` and the CLI build, and what the JSON Schema billing
reads says (:mod:`pvekvm.wire.schemas`). ``parse_event`` is the one gate: it refuses anything
that is not exactly a known event (unknown or extra fields, wrong JSON types — ``true`` is not an
integer —, values out of range, hostile host names) with :class:`InvalidEvent` whose ``reason``
names the offending field and the rule, never the value sent (reasons go to billing and the
logs; a refused value may be a secret sent in the wrong field, or someone else's name).
Constructing an event class directly applies the same rules, so producers cannot build what
intake would refuse. When several things are wrong, the reason names the first of: the version,
the type, an unknown field, a missing (or null) required field, then the fields in the order of
the envelope and the type's declaration.

The body is decoded by :mod:`pvekvm.jsonsafe` first (64 KB, 32 levels), with duplicate keys and
integer literals longer than ``MAX_INT_DIGITS`` digits refused while parsing. Ranges and lengths
come from :mod:`pvekvm.limits`, which tests/test_schema.py checks against the columns the values
land in: what this module accepts always fits the database.

Host names: RFC 1123, at most 253 octets, not ``localhost`` (or under ``.localhost``), not an IP
address nor any name whose last label is all digits. Internationalised names must be sent as
punycode A-labels (``xn--…``, checked to decode); they are stored and compared in that ASCII form,
case-insensitively. Unicode host names are refused.

Optional fields that are absent (or ``null``) take their default and are left out of
:meth:`Event.to_json`. Host names are normalised (lower case, no trailing dot), addresses to
their canonical text and backup days to week order, so that equal orders serialise, and derive
idempotency keys, identically.

Idempotency keys: an event built without one derives it from type, service and fields
(:func:`derive_idempotency_key`). The producers (``OrderClient``, the CLI) instead give the types
in ``REPEATABLE_TYPES`` a fresh key per call (:func:`fresh_idempotency_key`), since the same
suspend or power action may legitimately be ordered again; billing passes its own key to make a
retry of one call idempotent. On the wire the key is required.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pvekvm import clientfw, jsonsafe, languages, sshkeys
from pvekvm.limits import FIELD_LENGTHS, FIELD_RANGES, MAX_INT_DIGITS
from pvekvm.validation import is_valid_hostname, service_hostname_problem

EVENT_VERSION = 1
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})
MAX_EVENT_BYTES = jsonsafe.WIRE_MAX_BYTES  # 64 KB

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
PowerAction = Literal["start", "stop", "shutdown", "reboot"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)
POWER_ACTIONS: tuple[str, ...] = get_args(PowerAction)

_KEY_LEN, _SLUG_LEN = FIELD_LENGTHS["idempotency_key"], FIELD_LENGTHS["product"]
_SNAPSHOT_LEN, _HOST_LEN = FIELD_LENGTHS["name"], FIELD_LENGTHS["hostname"]
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


class InvalidEvent(ValueError):
    """An order event that must not be processed; ``reason`` says why and names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- how reasons read

def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            tuple: "array", dict: "object", type(None): "null"}.get(type(value),
                                                                    type(value).__name__)


def _show(value: Any) -> str:
    """What was sent, as a reason says it: its JSON type, then a number, boolean or null as it
    is (it carries no text) and anything else by its size only."""
    kind = _type_name(value)
    if isinstance(value, str):
        return f"{kind} of {len(value)} characters"
    if isinstance(value, list | tuple):
        return f"{kind} of {len(value)} items"
    if isinstance(value, dict):
        return f"{kind} of {len(value)} fields"
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _label(name: str) -> str:
    """A field name as it may appear in a reason: a name from the wire is shown escaped and
    cut short (a reason is stored and sent as a header: no control or lone surrogate
    characters, no 60 KB names)."""
    if re.fullmatch(r"[a-z0-9_]{1,40}", name):
        return name
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(name: str, message: str) -> InvalidEvent:
    return InvalidEvent(f"field '{_label(name)}': {message}")


def _refuse(message: str) -> PydanticCustomError:
    """A rule's own refusal, raised inside a validator; the reason is ``field 'x': message``."""
    return PydanticCustomError("refused", "{reason}", {"reason": message})


# --------------------------------------------------------------------------- field kinds
# Each kind is a pydantic type: its constraints are checked in pydantic's core and stated in the
# JSON Schema; a rule a schema cannot state is a validator raising its own reason (and a
# ``format`` or description in the schema). A pattern's description is the refusal's wording
# ("not <description>: <what was sent>").

def _int_range(column: str) -> dict[str, int]:
    low, high = FIELD_RANGES[column]
    return {"ge": low, "le": high}


_PATTERN_WORDS: dict[str, str] = {}  # anchored pattern → how a refusal names it


def _pattern(regex: str, what: str, max_length: int) -> Any:
    anchored = f"^(?:{regex})$"
    _PATTERN_WORDS[anchored] = what
    return Field(pattern=anchored, max_length=max_length, description=what)


def _valid_hostname(value: str) -> str:
    # _HOST_CHARS also guards against a trailing newline slipping through a `$` anchor.
    if not _HOST_CHARS.fullmatch(value) or not is_valid_hostname(value):
        raise _refuse(f"not a valid RFC 1123 host name: {_show(value)}")
    host = value.lower().rstrip(".")
    if len(host) > _HOST_LEN:
        raise _refuse(f"too long: {len(host)} octets (max {_HOST_LEN})")
    problem = service_hostname_problem(host)
    if problem:
        problem = re.sub(r"label '[^']*'", "a label", problem)  # the reason names no label
        raise _refuse(f"not usable as a host name: {_show(value)}: {problem}")
    return host


def _valid_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _refuse(f"not an IPv4 or IPv6 address: {_show(value)}") from None


def _valid_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if (not at or not local or len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local)
            or "." not in domain.strip(".") or not _HOST_CHARS.fullmatch(domain)
            or not is_valid_hostname(domain) or domain.endswith(".")):
        raise _refuse(f"not a valid e-mail address: {_show(value)}")
    return value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise _refuse("contains control characters")
    return value


def _language(value: str) -> str:
    try:
        return languages.normalize(value)
    except ValueError:  # its message quotes the value
        raise _refuse(f"not a language tag (like 'de', 'pt-BR') or a known language name: "
                      f"{_show(value)}") from None


def _timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _refuse(f"not an ISO-8601 timestamp: {_show(value)}") from None
    if parsed.tzinfo is None:
        raise _refuse(f"timestamp needs a UTC offset (e.g. 'Z' or '+00:00'): {_show(value)}")
    return value


def _not_reserved(value: str) -> str:
    """qemu-server reserves 'current' (the VM's present state) and 'pending' in any case."""
    if value == "current" or value.lower() == "pending":
        raise _refuse(f"{value} is a snapshot name Proxmox reserves")
    return value


def _weekdays(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _refuse(f"expected array, got {_show(value)}")
    seen: set[str] = set()
    for day in value:
        if type(day) is not str or day not in WEEKDAYS:
            raise _refuse(f"unknown day {_show(day)} (use {', '.join(WEEKDAYS)})")
        if day in seen:
            raise _refuse(f"day {day!r} listed twice")
        seen.add(day)
    return tuple(d for d in WEEKDAYS if d in seen)


def _ssh_keys(value: Any) -> tuple[str, ...]:
    """The client's public keys, each parsed from its blob (:mod:`pvekvm.sshkeys`), kept in
    their canonical form; the reason names the key by position, never its text."""
    if not isinstance(value, list | tuple):
        raise _refuse(f"expected array, got {_show(value)}")
    if len(value) > sshkeys.MAX_KEYS:
        raise _refuse(f"too many keys: {len(value)} (max {sshkeys.MAX_KEYS})")
    for at, line in enumerate(value, 1):
        if type(line) is not str:
            raise _refuse(f"key {at}: expected string, got {_show(line)}")
    try:
        return tuple(k.line for k in sshkeys.parse_keys(list(value)))
    except sshkeys.BadKey as exc:
        raise _refuse(str(exc)) from None


ServiceId = Annotated[int, Strict(), Field(**_int_range("service_id"))]
ClientId = Annotated[int, Strict(), Field(**_int_range("client_id"))]
BackupId = Annotated[int, Strict(), Field(**_int_range("backup_id"))]
IdempotencyKey = Annotated[str, Strict(), _pattern(
    rf"[A-Za-z0-9._:-]{{1,{_KEY_LEN}}}", f"1-{_KEY_LEN} characters of [A-Za-z0-9._:-]",
    _KEY_LEN)]
Slug = Annotated[str, Strict(), _pattern(
    rf"[a-z0-9][a-z0-9._-]{{0,{_SLUG_LEN - 1}}}",
    f"a slug ([a-z0-9][a-z0-9._-]{{0,{_SLUG_LEN - 1}}})", _SLUG_LEN)]
SnapshotName = Annotated[str, Strict(), _pattern(
    rf"[A-Za-z][A-Za-z0-9_-]{{1,{_SNAPSHOT_LEN - 1}}}",
    f"a snapshot name (a letter, then 1-{_SNAPSHOT_LEN - 1} of [A-Za-z0-9_-])", _SNAPSHOT_LEN),
    AfterValidator(_not_reserved),
    Field(json_schema_extra={"not": {"pattern": "^(?:current|[Pp][Ee][Nn][Dd][Ii][Nn][Gg])$"}})]
IsoName = Annotated[str, Strict(), _pattern(
    r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.iso",
    "an ISO file name (no path, [A-Za-z0-9._+-], ending .iso)", 205)]
NodeName = Annotated[str, Strict(), _pattern(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    "a node name (PVE's pve-node: a host name label)", 63)]
Hostname = Annotated[str, Strict(), Field(
    max_length=_HOST_LEN + 1,  # + a trailing dot; the schema states the name's own limit
    description="RFC 1123, at most 253 octets; not localhost, not an IP address, nor a name "
    "whose last label is all digits; an internationalised name as punycode (xn--); stored lower "
    "case without the trailing dot",
    json_schema_extra={"format": "hostname", "maxLength": _HOST_LEN}),
    AfterValidator(_valid_hostname)]
IpAddress = Annotated[str, Strict(), Field(
    max_length=45, description="an IPv4 or IPv6 address (kept in its canonical text form)",
    json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
    AfterValidator(_valid_address)]
Email = Annotated[str, Strict(), Field(max_length=FIELD_LENGTHS["email"],
                                       json_schema_extra={"format": "email"}),
                  AfterValidator(_valid_email)]
Language = Annotated[str, Strict(), Field(
    max_length=languages.MAX_LENGTH, description="the client's language, for its mail: a BCP "
    "47-style tag ('de', 'pt-BR') or an English language name ('german'); normalised to the tag",
    json_schema_extra={"pattern": languages.schema_pattern()}),
    AfterValidator(_language)]
def _firewall_rules(value: Any) -> tuple[dict[str, Any], ...]:
    try:
        return clientfw.parse_rules(value)
    except clientfw.RuleError as exc:
        raise _refuse(str(exc)) from None


_RULE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["direction", "action"],
    "properties": {
        "direction": {"enum": list(clientfw.DIRECTIONS)},
        "action": {"enum": list(clientfw.ACTIONS)},
        "proto": {"type": "string", "maxLength": 16,
                  "description": "tcp, udp, icmp, icmpv6, … (an /etc/protocols name PVE "
                  "knows) or its number"},
        "dport": {"type": "string", "maxLength": clientfw.MAX_PORTS_TEXT,
                  "pattern": r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$",
                  "description": "ports 0-65535, ranges a:b, comma separated, at most 15 "
                  "numbers (a range counts 2); needs a proto with ports"},
        "sport": {"type": "string", "maxLength": clientfw.MAX_PORTS_TEXT,
                  "pattern": r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$"},
        "source": {"type": "string", "maxLength": clientfw.MAX_ADDRESS,
                   "description": "addresses or CIDR networks (IPv4 or IPv6, not mixed), "
                   "comma separated, or one range a-b"},
        "dest": {"type": "string", "maxLength": clientfw.MAX_ADDRESS},
        "icmp_type": {"type": "string", "maxLength": 32},
        "comment": {"type": "string", "maxLength": clientfw.MAX_COMMENT,
                    "pattern": _NO_CONTROL},
        "enable": {"type": "boolean", "default": True}}}
FirewallRules = Annotated[tuple[dict[str, Any], ...], BeforeValidator(_firewall_rules), Field(
    description="the client's rules, in the order PVE evaluates them (after the engine's "
    "anti-spoofing filter); the whole set replaces the previous one; empty: none",
    json_schema_extra={"maxItems": clientfw.MAX_RULES, "items": _RULE_SCHEMA})]
Timestamp = Annotated[str, Strict(), Field(
    max_length=64, description="RFC 3339 / ISO 8601 with its UTC offset",
    json_schema_extra={"format": "date-time"}), AfterValidator(_timestamp)]


_NO_CONTROL_SCHEMA = {"pattern": _NO_CONTROL}
Description = Annotated[str, Strict(), Field(max_length=FIELD_LENGTHS["description"],
                                             json_schema_extra=_NO_CONTROL_SCHEMA),
                        AfterValidator(_no_control)]
Note = Annotated[str, Strict(), Field(max_length=FIELD_LENGTHS["note"],
                                      json_schema_extra=_NO_CONTROL_SCHEMA),
                 AfterValidator(_no_control)]
Days = Annotated[tuple[Weekday, ...], BeforeValidator(_weekdays), Field(
    description="weekdays, each at most once; empty: no scheduled backups",
    json_schema_extra={"uniqueItems": True, "maxItems": len(WEEKDAYS)})]
Action = PowerAction
SshKeys = Annotated[tuple[str, ...], BeforeValidator(_ssh_keys), Field(
    description="the client's SSH public keys, one OpenSSH line each ('<type> <base64> "
    "[comment]'): ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa of at least 2048 bits; "
    "each parsed from its key data, none twice, together at most 48 KiB as PVE receives them "
    "(its request limit before 8.4 is 64 KiB); the engine's max_ssh_keys may allow fewer. "
    "Absent: the service keeps its keys; an empty array removes them",
    json_schema_extra={"maxItems": sshkeys.MAX_KEYS, "items": {
        "type": "string", "maxLength": sshkeys.MAX_KEY_LENGTH,
        "pattern": "^(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) "
                   "[A-Za-z0-9+/]+={0,2}(?: [^\\n]*)?$"}})]


# --------------------------------------------------------------------------- events

ENVELOPE_FIELDS: tuple[str, ...] = ("version", "type", "idempotency_key", "service_id",
                                    "occurred_at")


class Event(BaseModel):
    """Common envelope. ``idempotency_key=None`` derives one from type, service id and fields.
    Frozen and hashable; equal orders compare equal."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _optional: ClassVar[frozenset[str]] = frozenset()

    service_id: ServiceId
    idempotency_key: IdempotencyKey = None  # type: ignore[assignment]  # None: derived
    occurred_at: Timestamp | None = None
    version: Literal[1] = 1
    type: str = ""

    def __init__(self, **data: Any) -> None:
        if type(self) is Event:
            raise TypeError("Event is abstract: use one of the EVENT_TYPES classes")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidEvent(_reason(type(self), exc.errors(include_url=False), data)) \
                from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        cls._optional = frozenset(name for name, f in cls.model_fields.items()
                                  if not f.is_required())

    @model_validator(mode="before")
    @classmethod
    def _absent_when_null(cls, data: Any) -> Any:
        """An optional field sent as null is as if absent: it takes its default."""
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or k not in cls._optional}
        return data

    def model_post_init(self, context: Any, /) -> None:
        if self.idempotency_key is None:
            object.__setattr__(self, "idempotency_key",
                               derive_idempotency_key(self.type, self.service_id, self.payload()))

    @property
    def routing_key(self) -> str:
        return f"order.{self.type}"

    def payload(self) -> dict[str, Any]:
        """The type-specific fields (no envelope), ``None`` left out, tuples as lists."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if name in ENVELOPE_FIELDS or value is None:
                continue
            out[name] = list(value) if isinstance(value, tuple) else value
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

    def stamped(self, occurred_at: str) -> Self:
        """The same order with its time set (a time the engine itself gives: not checked)."""
        return self.model_copy(update={"occurred_at": occurred_at})


class CreateEvent(Event):
    type: Literal["create"] = "create"
    client_id: ClientId
    product: Slug
    email: Email
    hostname: Hostname | None = None
    template: Slug | None = None
    ipv6: Annotated[bool, Strict()] = False
    language: Language | None = None  # the client's; mail in it, English fallback
    ssh_keys: SshKeys | None = None
    # the cluster the VM goes to (billing's configurable option); optional when the product is
    # offered in one location only; a location not offering the product is refused
    location: Slug | None = None


class ChangePackageEvent(Event):
    type: Literal["change_package"] = "change_package"
    product: Slug


class ReinstallEvent(Event):
    type: Literal["reinstall"] = "reinstall"
    template: Slug | None = None
    ssh_keys: SshKeys | None = None  # absent: the keys the service has


class ReinstallIsoEvent(Event):
    """The second reinstall mode: the VM's disks are replaced by empty ones of the package's
    sizes and it boots the installer ``iso`` (one the product's ISO storage holds), its network
    and firewall kept; the client installs from the CD (the console)."""

    type: Literal["reinstall_iso"] = "reinstall_iso"
    iso: IsoName


class RescueOnEvent(Event):
    """Boot the VM from the provider's rescue ISO, its disks attached (steps/rescue.py)."""

    type: Literal["rescue_on"] = "rescue_on"


class RescueOffEvent(Event):
    """Leave rescue mode: the boot order and CD from before it, started from disk."""

    type: Literal["rescue_off"] = "rescue_off"


class SuspendEvent(Event):
    type: Literal["suspend"] = "suspend"


class UnsuspendEvent(Event):
    type: Literal["unsuspend"] = "unsuspend"


class TerminateEvent(Event):
    type: Literal["terminate"] = "terminate"


class SnapshotCreateEvent(Event):
    """PVE's pve-snapshot-name (format pve-configid, at most 40 characters) without the names
    qemu-server reserves ('current', 'pending')."""

    type: Literal["snapshot_create"] = "snapshot_create"
    name: SnapshotName
    description: Description | None = None


class SnapshotDeleteEvent(Event):
    type: Literal["snapshot_delete"] = "snapshot_delete"
    name: SnapshotName
    description: Description | None = None


class SnapshotRollbackEvent(Event):
    type: Literal["snapshot_rollback"] = "snapshot_rollback"
    name: SnapshotName
    description: Description | None = None


class BackupCreateEvent(Event):
    type: Literal["backup_create"] = "backup_create"
    note: Note | None = None


class BackupDeleteEvent(Event):
    type: Literal["backup_delete"] = "backup_delete"
    backup_id: BackupId


class BackupRestoreEvent(Event):
    type: Literal["backup_restore"] = "backup_restore"
    backup_id: BackupId


class BackupScheduleEvent(Event):
    """``days`` empty = automatic backups off. Normalised to week order."""

    type: Literal["backup_schedule"] = "backup_schedule"
    days: Days


class ResetPasswordEvent(Event):
    """A new password; ``ssh_keys`` (when given) replace the service's keys as well."""

    type: Literal["reset_password"] = "reset_password"
    ssh_keys: SshKeys | None = None


class IsoMountEvent(Event):
    type: Literal["iso_mount"] = "iso_mount"
    iso: IsoName


class IsoUnmountEvent(Event):
    type: Literal["iso_unmount"] = "iso_unmount"


class MigrateEvent(Event):
    """An admin's: move the VM to ``node`` (None: placement chooses), live when it can."""

    type: Literal["migrate"] = "migrate"
    node: NodeName | None = None


class PowerEvent(Event):
    type: Literal["power"] = "power"
    action: Action


class RdnsSetEvent(Event):
    """The client's reverse DNS: ``address`` (one the service holds) gets PTR ``hostname``, a
    name the product's ``rdns_policy`` allows (:mod:`pvekvm.rdns_policy`: checked by the API,
    by intake as far as the database goes, and by the step, DNS included)."""

    type: Literal["rdns_set"] = "rdns_set"
    address: IpAddress
    hostname: Hostname


class RdnsResetEvent(Event):
    """The PTR of ``address`` goes back to the service's own host name."""

    type: Literal["rdns_reset"] = "rdns_reset"
    address: IpAddress


class LanguageChangeEvent(Event):
    """The client's language for its mail from now on, validated and normalised as
    ``create``'s is (an English name such as ``german`` becomes ``de``)."""

    type: Literal["language_change"] = "language_change"
    language: Language


class FirewallRulesSetEvent(Event):
    """The client's own firewall rules for its VM, as one set replacing the previous one
    (:mod:`pvekvm.clientfw` says what a rule may hold); the package may allow none or cap
    their number (intake refuses)."""

    type: Literal["firewall_rules_set"] = "firewall_rules_set"
    rules: FirewallRules

    def __hash__(self) -> int:  # the rules are dicts: hashed by the event's canonical JSON
        return hash(self.to_json())


class HostnameChangeEvent(Event):
    """The client renames its VM: the same rules as a create's host name (a name another live
    service holds, or one another service published in DNS, is refused); DNS A/AAAA/PTR move
    to it and cloud-init gets it (the guest takes it at its next boot)."""

    type: Literal["hostname_change"] = "hostname_change"
    hostname: Hostname


def type_of(cls: type[Event]) -> str:
    """The event type an event class carries (its ``type`` field's value)."""
    return str(cls.model_fields["type"].default)


EVENT_TYPES: dict[str, type[Event]] = {type_of(cls): cls for cls in (
    CreateEvent, ChangePackageEvent, ReinstallEvent, SuspendEvent, UnsuspendEvent,
    TerminateEvent, SnapshotCreateEvent, SnapshotDeleteEvent, SnapshotRollbackEvent,
    BackupCreateEvent, BackupDeleteEvent, BackupRestoreEvent, BackupScheduleEvent,
    ResetPasswordEvent, IsoMountEvent, IsoUnmountEvent, PowerEvent, RdnsSetEvent, RdnsResetEvent,
    MigrateEvent, LanguageChangeEvent, ReinstallIsoEvent, RescueOnEvent, RescueOffEvent,
    FirewallRulesSetEvent, HostnameChangeEvent,
)}

# Orders that may legitimately be placed again with the same fields (suspend, unsuspend,
# suspend again; X → Y → X packages; a second reinstall): the producers give each call a fresh
# key. Not repeatable: create and terminate (once per service) and backup_schedule (saving the
# same days twice is the same state).
REPEATABLE_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - {"create", "terminate",
                                                             "backup_schedule"}


# --------------------------------------------------------------------------- keys

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


def producer_key(event_type: str, service_id: int, given: str | None) -> str | None:
    """The key a producer sends: ``given`` when billing passes one, else a fresh key for a
    repeatable type, else None (derived from the fields when the event is built)."""
    if given is not None:
        return given
    if event_type in REPEATABLE_TYPES and type(service_id) is int:
        return fresh_idempotency_key(event_type, service_id)
    return None


# --------------------------------------------------------------------------- refusals

_EXPECTED = {"int_type": "integer", "string_type": "string", "bool_type": "boolean",
             "literal_error": "string"}


def _reason(cls: type[Event], errors: list[Any], data: Mapping[str, Any]) -> str:
    """The one reason for a refused event: the first fault by the order the module docstring
    gives, said in the field's own words."""
    fields = {name: at for at, name in enumerate(cls.model_fields)}
    keys = {key: at for at, key in enumerate(data)}  # one pass: thousands of unknown fields

    def rank(error: Any) -> tuple[int, int]:
        name = str(error["loc"][0]) if error["loc"] else ""
        if name == "version":
            return (0, 0)
        if error["type"] == "extra_forbidden":
            return (1, keys.get(name, 0))
        at = fields.get(name, len(fields))
        if error["type"] == "missing" or error.get("input", ...) is None:
            return (2, at)
        return (3, at)

    first = min(errors, key=rank)
    return _say(cls, str(first["loc"][0]) if first["loc"] else "event", first)


def _say(cls: type[Event], name: str, error: Any) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if name == "version" and kind != "missing":
        return _version_problem(value) or str(_bad(name, f"refused ({kind})"))
    if kind == "extra_forbidden":
        return str(_bad(name, f"unknown field for event type '{type_of(cls)}'"))
    if kind == "missing":
        return f"field '{name}': missing"
    if value is None:
        return str(_bad(name, "must not be null"))
    if kind == "refused":
        return str(_bad(name, ctx["reason"]))
    if kind in _EXPECTED and (kind != "literal_error" or type(value) is not str):
        return str(_bad(name, f"expected {_EXPECTED[kind]}, got {_show(value)}"))
    if kind == "literal_error":
        choices = ", ".join(map(str, get_args(cls.model_fields[name].annotation)))
        return str(_bad(name, f"must be one of {choices}, got {_show(value)}"))
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = FIELD_RANGES[name]
        return str(_bad(name, f"out of range: {_show(value)} (must be {low}..{high})"))
    if kind == "string_too_long":
        return str(_bad(name, f"too long: {len(value)} characters (max {ctx['max_length']})"))
    if kind == "string_unicode":
        return str(_bad(name, "not valid Unicode (lone surrogate)"))
    if kind == "string_pattern_mismatch":
        return str(_bad(name, f"not {_PATTERN_WORDS[ctx['pattern']]}: {_show(value)}"))
    return str(_bad(name, f"refused ({kind})"))  # a rule without its own words: its kind


# --------------------------------------------------------------------------- parsing

def _version_problem(version: Any) -> str | None:
    if type(version) is not int:
        return str(_bad("version", f"expected integer, got {_show(version)}"))
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, sorted(SUPPORTED_VERSIONS)))
        return str(_bad("version", f"unsupported version {version} (supported: {supported})"))
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _bad(key, "given twice")
            seen.add(key)
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
    """Decode and validate one order event; raise :class:`InvalidEvent` with a clear reason."""
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
    """Validate an already decoded JSON value (see :func:`parse_event`). ``derive_key``
    (``POST /v1/events``): an event without ``idempotency_key`` gets one derived from its
    fields when its type is not repeatable (create, terminate, backup_schedule: a retry is the
    same order); a repeatable one must carry billing's own key."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {_type_name(data)}")
    if "version" not in data:
        raise InvalidEvent("field 'version': missing")
    problem = _version_problem(data["version"])
    if problem:
        raise InvalidEvent(problem)
    if "type" not in data:
        raise InvalidEvent("field 'type': missing")
    event_type = data["type"]
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise _bad("type", f"unknown event type {_show(event_type)} "
                           f"(known: {', '.join(sorted(EVENT_TYPES))})")
    # An unknown field is named before any other fault (after the version and type): found
    # here in one pass, pydantic need not list thousands of them.
    extra = next((key for key in data if key not in cls.model_fields), None)
    if extra is not None:
        raise _bad(extra, f"unknown field for event type '{event_type}'")
    if data.get("idempotency_key") is None:  # optional to build (then derived), not on the wire
        if derive_key and event_type not in REPEATABLE_TYPES:
            return cls(**{k: v for k, v in data.items() if k != "idempotency_key"})
        if derive_key and "service_id" in data:
            raise InvalidEvent(
                f"field 'idempotency_key': missing: a {event_type} may be ordered again on "
                "purpose, so only billing can tell a retry from a new order: send your own "
                "key (e.g. the module call's id)")
        raise InvalidEvent(_keyless(cls, data))
    return cls(**data)


def _keyless(cls: type[Event], data: Mapping[str, Any]) -> str:
    """Why an order without its key is refused: a missing service id comes first."""
    errors = [{"type": "missing", "loc": (name,)} if name not in data
              else {"type": "null", "loc": (name,), "input": None}
              for name in ("service_id", "idempotency_key") if data.get(name) is None]
    return _reason(cls, errors, data)


__all__ = [
    "EVENT_TYPES", "EVENT_VERSION", "MAX_EVENT_BYTES", "POWER_ACTIONS", "SUPPORTED_VERSIONS",
    "WEEKDAYS", "BackupCreateEvent", "BackupDeleteEvent", "BackupRestoreEvent",
    "BackupScheduleEvent", "ChangePackageEvent", "CreateEvent", "Event",
    "FirewallRulesSetEvent", "HostnameChangeEvent", "InvalidEvent",
    "IsoMountEvent", "IsoUnmountEvent", "LanguageChangeEvent", "MigrateEvent", "PowerEvent",
    "RdnsResetEvent", "RdnsSetEvent",
    "ReinstallEvent", "ReinstallIsoEvent", "RescueOffEvent", "RescueOnEvent",
    "ResetPasswordEvent", "SnapshotCreateEvent", "SnapshotDeleteEvent",
    "SnapshotRollbackEvent", "SuspendEvent", "REPEATABLE_TYPES", "TerminateEvent",
    "UnsuspendEvent", "derive_idempotency_key", "event_from_dict", "fresh_idempotency_key",
    "parse_event", "producer_key", "request_hash", "type_of",
]
