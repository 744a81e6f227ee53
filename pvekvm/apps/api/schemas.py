"""Response bodies (pydantic): what the OpenAPI document promises and responses are held to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, IPvAnyAddress

from pvekvm.wire.schemas import order_body_schema


def _as_utc(when: datetime) -> datetime:
    """The tables keep naive UTC (the engine runs in UTC): give every timestamp its offset."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# Every datetime the API sends: RFC 3339 with its offset (``2026-12-06T19:59:00.627+00:00``).
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: path, query, header or body, then the name")
    msg: str
    type: str = Field(description="the pydantic error type, e.g. missing, int_parsing")


class Problem(BaseModel):
    """Every refusal: ``detail`` is one readable sentence; a request that fails validation also
    lists each field's problem in ``errors`` (never the value sent)."""

    detail: str
    errors: list[FieldError] | None = Field(
        None, description="per-field problems (validation refusals only)")


class Address(BaseModel):
    address: str = Field(description="an address the VM is configured with (for a routed "
                         "prefix, its first host address)")
    version: int
    primary: bool = Field(True, description="the VM's main address of this version; false: "
                          "an additional IPv4 (on its own NIC)")
    routed_prefix: str | None = Field(None, description="the IPv6 prefix routed to the VM, "
                                      "e.g. 2001:db8:100:5::/64")
    ptr: str | None = Field(None, description="the name this address's PTR record gives (the "
                            "client's rDNS name, else the host name); null: no configured "
                            "reverse zone covers the address")
    ptr_published: bool = Field(False, description="the DNS provider holds that PTR; false "
                                "while it is owed (the DNS retry job publishes it)")


class StepLine(BaseModel):
    line: str = Field(description="the manual's step line, e.g. '[+]  3. Resize system disk …'")
    result: str
    at: UtcDatetime | None


class OperationView(BaseModel):
    id: int
    kind: str
    status: str = Field(description="running|paused|done|failed|cancelled")
    state: str
    error: str | None
    created_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    steps: list[StepLine]


class CurrentOperation(BaseModel):
    id: int
    kind: str
    status: str
    state: str
    error: str | None
    last_step: str | None = Field(description="the last step line written, if any")


class LiveStatus(BaseModel):
    """From Proxmox ``status/current``."""

    power: str = Field(description="running|stopped (PVE 'status')")
    qmpstatus: str | None
    uptime_s: int
    cpu: float = Field(description="CPU use, fraction of all vCPUs (0..1)")
    cpus: int
    mem_bytes: int
    maxmem_bytes: int
    iso: str | None = Field(None, description="the ISO file in the VM's CD-ROM (from its "
                            "Proxmox config), null: none mounted")


class SshKeyView(BaseModel):
    type: str = Field(description="ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa")
    bits: int
    fingerprint: str = Field(description="as ssh-keygen -l shows it: SHA256:<base64>")
    comment: str


class ServiceView(BaseModel):
    id: int
    client_id: int
    status: str = Field(description="pending|deploying|ready|suspended|failed|terminated")
    vmid: int | None
    node: str | None
    hostname: str
    addresses: list[Address]
    product: str | None
    operation: CurrentOperation | None = Field(description="the unfinished operation, if any")
    live: LiveStatus | None
    proxmox_unreachable: bool = Field(
        description="true when Proxmox did not answer within the API's short timeout")
    proxmox_error: str | None = Field(description="Proxmox answered, but with this error")
    throttled_period: str | None = Field(
        None, description="YYYY-MM: the month (UTC) the VM is throttled for, its traffic over "
        "the package's quota (net0 at the overage rate); null = the package rate")
    language: str | None = Field(None, description="the client's language as ordered "
                                 "(create, language_change; normalised tag), null: none given")
    mail_language: str = Field("en", description="the language its mails are sent in: "
                               "language, or its fallback when no templates exist for it")
    rescue: bool = Field(False, description="in rescue mode: the VM boots the provider's "
                         "rescue ISO (rescue_off boots it from its disk again)")
    ssh_keys: list[SshKeyView] = Field(
        default_factory=list, description="the client's SSH public keys the VM is given "
        "(fingerprints, never the keys)")
    password_login: bool = Field(
        True, description="false: the package allows no SSH password login (keys only; the "
        "ready mail carries no password)")


class Credentials(BaseModel):
    service_id: int
    username: str | None
    password: str | None


class SnapshotView(BaseModel):
    name: str
    description: str
    created_at: UtcDatetime | None
    expires_at: UtcDatetime


class BackupView(BaseModel):
    id: int
    volid: str
    storage: str
    node: str = Field(description="the node whose API reaches the archive (shared storage "
                      "follows the VM; a local archive stays where it was made)")
    size_bytes: int
    scheduled: bool
    note: str
    created_at: UtcDatetime | None
    restorable: bool = Field(description="the archive can be restored where the VM is now "
                             "(false: on another node's local storage)")
    not_restorable_because: str | None = Field(
        default=None, description="why not (restorable false); deleting it still works")


class BackupScheduleView(BaseModel):
    days: list[str] = Field(description="weekdays (mon..sun); empty: no scheduled backups")
    time: str | None = Field(description="HH:MM, chosen at random when the schedule was saved")


class IsoGroup(BaseModel):
    group: str = Field(description="filename part before the first '-'; no dash: OTHER")
    isos: list[str]


class IsoList(BaseModel):
    storage: str
    groups: list[IsoGroup]


Metric = Literal["cpu", "memory", "network", "disk"]
Timeframe = Literal["hour", "day", "week", "month", "year"]


class GraphPoint(BaseModel):
    time: int
    values: dict[str, float | None]


class Graph(BaseModel):
    metric: Metric
    timeframe: Timeframe
    series: list[str] = Field(description="the Proxmox rrddata fields in each point's values")
    points: list[GraphPoint]


class UsageHour(BaseModel):
    period_start: UtcDatetime = Field(description="UTC hour")
    bytes_in: int
    bytes_out: int


class Usage(BaseModel):
    """Traffic counted by the accounting job (rrddata netin/netout) for hours starting in
    [from, to)."""

    service_id: int
    period_from: UtcDatetime = Field(alias="from")
    period_to: UtcDatetime = Field(alias="to")
    bytes_in: int
    bytes_out: int
    hours: list[UsageHour]


class ConsoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_address: IPvAnyAddress | None = Field(
        None, description="(billing tokens only) the browser's address: with [console] "
        "bind_client_address only it may connect")


class ConsoleAccess(BaseModel):
    """A console for the browser: open ``url`` (or the console proxy's address + ``path``) in
    a window or an iframe. The token inside is single use, connects until ``expires_at``, and
    holds no Proxmox credential; the console proxy opens the VM's VNC itself."""

    service_id: int
    token: str = Field(description="the single-use console token (already in url/path)")
    path: str = Field(description="the page on the console proxy, with the token")
    url: str | None = Field(description="[console] public_url + path; null when not set")
    expires_at: UtcDatetime = Field(description="connect before this (the session may then "
                                    "run up to [console] max_session_s)")
    bound_address: str | None = Field(description="the only browser address that may "
                                      "connect; null: any")


class ClientTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: int | None = Field(None, ge=60, le=10**8, description="seconds the token lives; "
                              "more than [api] client_token_ttl_s (the default) is cut to it")


class ClientToken(BaseModel):
    """Shown once: only its SHA-256 is kept. Ends at ``expires_at``, when revoked
    (``DELETE /v1/client-tokens/{token_id}``) or when the service is terminated or re-created."""

    service_id: int
    token: str
    token_id: str
    expires_at: UtcDatetime


class RdnsRequest(BaseModel):
    hostname: str = Field(min_length=1, max_length=254, json_schema_extra={"format": "hostname"},
                          description="RFC 1123 name the address's PTR gives")


class ProductView(BaseModel):
    """A product billing may order (``create``'s ``product``), as the catalog defines it."""

    name: str
    template: str | None = Field(description="the template a create without one gets")
    templates: list[str] = Field(default_factory=list, description="the templates a create or "
                                 "reinstall may name (the OS picker: GET /v1/products/{name}/"
                                 "templates has each one's OS family and user)")
    cores: int
    memory_mb: int
    disk_gb: int
    add_disk_gb: int = Field(description="the additional disk; 0 = none")
    net_rate_mbps: float = Field(description="net0 rate, MB/s; 0 = unlimited")
    extra_ipv4: int
    ipv6: bool = Field(description="the product has an IPv6 pool (order with ipv6 = true)")
    snapshot_limit: int
    backup_limit: int
    iso_storage: str | None = Field(description="where its ISO images are (GET /v1/isos "
                                    "groups by storage); null = no ISO mounting")
    traffic_quota_gb: int | None = Field(description="per UTC month; null = unlimited")
    cpu_type: str | None = Field(None, description="PVE's CPU model; null = the template's")
    cpulimit: float | None = Field(None, description="CPUs of time at most; null = no limit")
    cpuunits: int | None = Field(None, description="CPU weight; null = PVE's default")
    balloon_mb: int | None = Field(None, description="balloon minimum memory (MiB); 0 = no "
                                   "balloon device; null = PVE's default")
    client_fw_rules: int = Field(20, description="how many own firewall rules a client may "
                                 "set (firewall_rules_set); 0 = none")

    locations: list[str] = Field(default_factory=list, description=(
        "the locations (clusters) offering it, create's ``location``; needed in the order "
        "when there are several"))


class FirewallRule(BaseModel):
    """One of the client's rules, as firewall_rules_set takes it (pvekvm/clientfw.py)."""

    direction: str = Field(description="in|out")
    action: str = Field(description="ACCEPT|DROP|REJECT")
    enable: bool = True
    proto: str | None = None
    dport: str | None = None
    sport: str | None = None
    source: str | None = None
    dest: str | None = None
    icmp_type: str | None = None
    comment: str | None = None


class FirewallRulesView(BaseModel):
    """The client's own firewall rules: the set last saved, in the order PVE evaluates them,
    all after the engine's anti-spoofing filter."""

    service_id: int
    rules: list[FirewallRule]
    allowed: int = Field(description="how many rules the package allows (0: none; a "
                         "DHCP package or one with its firewall off allows none)")
    applied: int = Field(description="how many of ``rules`` stand in the VM's firewall (the "
                         "first ``allowed`` ones)")
    pending: bool = Field(description="a firewall_rules_set is accepted but not yet done")
    updated_at: UtcDatetime | None


class TemplateView(BaseModel):
    name: str = Field(description="what create's and reinstall's ``template`` names")
    os_user: str


class TemplateChoice(BaseModel):
    """One OS a product offers (the OS picker: pvekvm/picker.py)."""

    name: str = Field(description="what create's and reinstall's ``template`` names")
    os_family: str = Field(description="debian, ubuntu, ...: the name's part before its first "
                           "'-', to group the list by")
    os_type: str = Field(description="linux or windows")
    os_user: str = Field(description="the user the VM's login is for")
    default: bool = Field(description="the product's own template: a create without one")
    current: bool | None = Field(None, description="a service's list: the template installed "
                                 "now (reinstall without a template installs it again)")


class TemplateOffer(BaseModel):
    """The templates a product offers, in the catalog's order; create and reinstall to any
    other are refused with the reason."""

    product: str
    templates: list[TemplateChoice]


class Catalog(BaseModel):
    """What billing may order: products and templates (names as events name them)."""

    products: list[ProductView]
    templates: list[TemplateView]
    locations: list[str] = Field(default_factory=list, description=(
        "every location (cluster) some product is offered in: create's ``location``"))


class EventAccepted(BaseModel):
    idempotency_key: str
    type: str
    service_id: int


# --------------------------------------------------------------------------- order event body

def event_body_schema() -> dict[str, Any]:
    """The request body of ``POST /v1/events``: one of the order types, from their one
    declaration (:mod:`pvekvm.wire.orders`, shipped as ``schemas/events/orders/``)."""
    return order_body_schema()
