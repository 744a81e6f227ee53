"""Response bodies (pydantic): what the OpenAPI document promises and responses are held to."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Problem(BaseModel):
    detail: str


class Address(BaseModel):
    address: str = Field(description="an address the VM is configured with (for a routed "
                         "prefix, its first host address)")
    version: int
    primary: bool = Field(True, description="the VM's main address of this version; false: "
                          "an additional IPv4 (on its own NIC)")
    routed_prefix: str | None = Field(None, description="the IPv6 prefix routed to the VM, "
                                      "e.g. 2001:db8:100:5::/64")


class StepLine(BaseModel):
    line: str = Field(description="the manual's step line, e.g. '[+]  3. Resize system disk …'")
    result: str
    at: datetime | None


class OperationView(BaseModel):
    id: int
    kind: str
    status: str = Field(description="running|paused|done|failed|cancelled")
    state: str
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None
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


class Credentials(BaseModel):
    service_id: int
    username: str | None
    password: str | None


class SnapshotView(BaseModel):
    name: str
    description: str
    created_at: datetime | None
    expires_at: datetime


class BackupView(BaseModel):
    id: int
    volid: str
    storage: str
    node: str
    size_bytes: int
    scheduled: bool
    note: str
    created_at: datetime | None


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
    period_start: datetime = Field(description="UTC hour")
    bytes_in: int
    bytes_out: int


class Usage(BaseModel):
    """Traffic counted by the accounting job (rrddata netin/netout) for hours starting in
    [from, to)."""

    service_id: int
    period_from: datetime = Field(alias="from")
    period_to: datetime = Field(alias="to")
    bytes_in: int
    bytes_out: int
    hours: list[UsageHour]


class ConsoleTicket(BaseModel):
    """What a noVNC proxy host needs: open ``wss://{pve_host}:{pve_port}{websocket_path}`` with
    the same PVE API token the engine uses (the ticket is bound to it), then speak VNC with
    ``ticket`` as the password. Valid for about 40 seconds."""

    node: str
    vmid: int
    pve_host: str
    pve_port: int
    port: int
    ticket: str
    user: str | None = Field(description="the Proxmox user the ticket is bound to (the engine's "
                             "API token id); null for a client token: not shown to clients")
    upid: str | None = Field(description="the vncproxy task (names the engine's Proxmox user); "
                             "null for a client token")
    cert: str | None
    websocket_path: str


class ClientTokenRequest(BaseModel):
    ttl_s: int | None = Field(None, ge=60, le=10**8, description="seconds the token lives; at "
                              "most [api] client_token_ttl_s (the default)")


class ClientToken(BaseModel):
    """Shown once: only its SHA-256 is kept. Ends at ``expires_at``, when revoked
    (``DELETE /v1/client-tokens/{token_id}``) or when the service is terminated or re-created."""

    service_id: int
    token: str
    token_id: str
    expires_at: datetime


class RdnsRequest(BaseModel):
    hostname: str = Field(max_length=254, description="RFC 1123 name the address's PTR gives")


class EventAccepted(BaseModel):
    idempotency_key: str
    type: str
    service_id: int
