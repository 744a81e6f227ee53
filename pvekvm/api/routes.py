"""The ``/v1`` endpoints. Reads come from the engine's tables (read-only) and from Proxmox; the
API itself writes only ``audit_log`` and publishes order events."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producers.events import (
    MAX_EVENT_BYTES,
    Event,
    InvalidEvent,
    RdnsResetEvent,
    RdnsSetEvent,
    fresh_idempotency_key,
    parse_event,
)
from pvekvm import messaging
from pvekvm import secrets as secretbox
from pvekvm.addresses import cidr, held, held_row, host_address
from pvekvm.api import pve, schemas
from pvekvm.api.auth import Principal, authenticate, client_token
from pvekvm.config import Settings
from pvekvm.models import (
    AuditLog,
    Backup,
    BackupSchedule,
    Operation,
    Product,
    Service,
    Snapshot,
    StepRun,
    TrafficUsage,
)
from pvekvm.oplog import format_step

MAX_SERVICE_ID = 2**32 - 1
GRAPH_FIELDS: dict[str, list[str]] = {
    "cpu": ["cpu", "maxcpu"], "memory": ["mem", "maxmem"], "network": ["netin", "netout"],
    "disk": ["diskread", "diskwrite"]}
CONSOLE_REFUSED = ("suspended", "terminated")

bearer = HTTPBearer(auto_error=False, description="billing token or per-service client token")
router = APIRouter(prefix="/v1", responses={
    401: {"model": schemas.Problem, "description": "no token or a wrong token"}})
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Problem,
                   "description": "no such service, or not the token's service"}}


# --------------------------------------------------------------------------- dependencies

def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def principal(creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
              settings: Annotated[Settings, Depends(settings_of)]) -> Principal:
    if creds is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    who = authenticate(settings.api, creds.credentials)
    if who is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return who


Who = Annotated[Principal, Depends(principal)]
ServiceId = Annotated[int, Path(ge=1, le=MAX_SERVICE_ID, description="billing's service id")]


def scoped_service(service_id: ServiceId, who: Who) -> Service:
    """The service, if it exists and the token may see it; otherwise 404 either way."""
    svc = Service.get_or_none(Service.id == service_id) if who.may_read(service_id) else None
    if svc is None:
        raise HTTPException(404, f"no service {service_id}")
    return svc


Svc = Annotated[Service, Depends(scoped_service)]
Cfg = Annotated[Settings, Depends(settings_of)]


def audit(svc: Service, event: str, who: Principal, request: Request, **extra: Any) -> None:
    """Who read what; never the secret itself."""
    detail = {"by": who.name, "from": request.client.host if request.client else None, **extra}
    AuditLog.create(service_id=svc.id, event=event, detail=json.dumps(detail, sort_keys=True),
                    created_at=datetime.now())


# --------------------------------------------------------------------------- views

def _machine(kind: str) -> Any:
    from steps.machines import MACHINES

    return MACHINES.get(kind)


def _step_line(machine: Any, r: StepRun) -> str:
    number = machine.number(r.from_state) if machine and machine.at(r.from_state) else 0
    return format_step(number, r.label, r.result, r.from_state, r.to_state, r.message or "",
                       r.duration_ms / 1000)


def _operation(op: Operation) -> schemas.OperationView:
    machine = _machine(op.kind)
    runs = StepRun.select().where(StepRun.operation_id == op.id).order_by(StepRun.id)
    return schemas.OperationView(
        id=op.id, kind=op.kind, status=op.status, state=op.state, error=op.error,
        created_at=op.created_at, finished_at=op.finished_at,
        steps=[schemas.StepLine(line=_step_line(machine, r), result=r.result, at=r.created_at)
               for r in runs])


def _current(svc: Service) -> schemas.CurrentOperation | None:
    op = Operation.get_or_none(Operation.active_service == svc.id)
    if op is None:
        return None
    last = (StepRun.select().where(StepRun.operation_id == op.id)
            .order_by(StepRun.id.desc()).first())
    return schemas.CurrentOperation(
        id=op.id, kind=op.kind, status=op.status, state=op.state, error=op.error,
        last_step=_step_line(_machine(op.kind), last) if last else None)


def _live(settings: Settings, svc: Service) -> tuple[schemas.LiveStatus | None, bool, str | None]:
    if not svc.vmid or not svc.node:
        return None, False, None
    try:
        st = pve.call(settings.proxmox, settings.api.proxmox_timeout_s, "get",
                      f"nodes/{svc.node}/qemu/{svc.vmid}/status/current")
    except pve.Unreachable:
        return None, True, None
    except pve.PveError as exc:
        return None, exc.status == 595, f"HTTP {exc.status}: {exc}"
    return schemas.LiveStatus(
        power=str(st.get("status", "unknown")), qmpstatus=st.get("qmpstatus"),
        uptime_s=int(st.get("uptime") or 0), cpu=float(st.get("cpu") or 0),
        cpus=int(st.get("cpus") or 0), mem_bytes=int(st.get("mem") or 0),
        maxmem_bytes=int(st.get("maxmem") or 0)), False, None


def _pve_or_503(settings: Settings, method: str, path: str, **params: Any) -> Any:
    try:
        return pve.call(settings.proxmox, settings.api.proxmox_timeout_s, method, path, **params)
    except pve.Unreachable:
        raise HTTPException(503, "proxmox_unreachable") from None
    except pve.PveError as exc:
        raise HTTPException(502, f"Proxmox answered HTTP {exc.status}: {exc}") from None


# --------------------------------------------------------------------------- endpoints

@router.get("/services/{service_id}", response_model=schemas.ServiceView, responses=NOT_FOUND)
def get_service(svc: Svc, settings: Cfg) -> schemas.ServiceView:
    """Status, placement, addresses, product, the running operation and live power state."""
    product = Product.get_or_none(Product.id == svc.product_id)
    addresses = held(svc.id)
    live, unreachable, error = _live(settings, svc)
    return schemas.ServiceView(
        id=svc.id, client_id=svc.client_id, status=svc.status, vmid=svc.vmid, node=svc.node,
        hostname=svc.hostname, product=product.name if product else None,
        addresses=[schemas.Address(address=host_address(a), version=a.version,
                                   primary=a.slot == 0, routed_prefix=None if a.prefixlen is None
                                   else cidr(a)) for a in addresses],
        operation=_current(svc), live=live, proxmox_unreachable=unreachable,
        proxmox_error=error, throttled_period=f"{svc.throttled_period:%Y-%m}"
        if svc.throttled_period else None)


@router.get("/services/{service_id}/credentials", response_model=schemas.Credentials,
            responses=NOT_FOUND)
def get_credentials(svc: Svc, who: Who, settings: Cfg, request: Request) -> schemas.Credentials:
    """The OS user and password (decrypted only here). Every read is audit-logged."""
    password = (secretbox.decrypt(settings.secret_key_file, svc.password_enc)
                if svc.password_enc else None)
    audit(svc, "api_credentials_read", who, request)
    return schemas.Credentials(service_id=svc.id, username=svc.username, password=password)


@router.get("/services/{service_id}/operations", response_model=list[schemas.OperationView],
            responses=NOT_FOUND)
def list_operations(svc: Svc, limit: Annotated[int, Query(ge=1, le=200)] = 20
                    ) -> list[schemas.OperationView]:
    """The service's operations, newest first, each with its step lines."""
    ops = (Operation.select().where(Operation.service_id == svc.id)
           .order_by(Operation.id.desc()).limit(limit))
    return [_operation(op) for op in ops]


@router.get("/services/{service_id}/operations/{operation_id}",
            response_model=schemas.OperationView, responses=NOT_FOUND)
def get_operation(svc: Svc, operation_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
                  ) -> schemas.OperationView:
    op = Operation.get_or_none((Operation.id == operation_id)
                               & (Operation.service_id == svc.id))
    if op is None:
        raise HTTPException(404, f"no operation {operation_id} for service {svc.id}")
    return _operation(op)


@router.get("/services/{service_id}/snapshots", response_model=list[schemas.SnapshotView],
            responses=NOT_FOUND)
def list_snapshots(svc: Svc) -> list[schemas.SnapshotView]:
    rows = Snapshot.select().where(Snapshot.service_id == svc.id).order_by(Snapshot.created_at)
    return [schemas.SnapshotView(name=s.name, description=s.description,
                                 created_at=s.created_at, expires_at=s.expires_at) for s in rows]


@router.get("/services/{service_id}/backups", response_model=list[schemas.BackupView],
            responses=NOT_FOUND)
def list_backups(svc: Svc) -> list[schemas.BackupView]:
    rows = Backup.select().where(Backup.service_id == svc.id).order_by(Backup.created_at)
    return [schemas.BackupView(id=b.id, volid=b.volid, storage=b.storage, node=b.node,
                               size_bytes=b.size_bytes, scheduled=bool(b.scheduled),
                               note=b.note, created_at=b.created_at) for b in rows]


@router.get("/services/{service_id}/backup-schedule", response_model=schemas.BackupScheduleView,
            responses=NOT_FOUND)
def get_backup_schedule(svc: Svc) -> schemas.BackupScheduleView:
    row = BackupSchedule.get_or_none(BackupSchedule.service_id == svc.id)
    if row is None or not row.days:
        return schemas.BackupScheduleView(days=[], time=None)
    hours, minutes = divmod(row.minute_of_day, 60)
    return schemas.BackupScheduleView(days=row.days.split(","), time=f"{hours:02d}:{minutes:02d}")


def _utc_naive(when: datetime) -> datetime:
    """An ISO timestamp as the naive UTC the usage table keeps (no offset = UTC)."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


@router.get("/services/{service_id}/usage", response_model=schemas.Usage,
            response_model_by_alias=True,
            responses={**NOT_FOUND, 422: {"model": schemas.Problem}})
def get_usage(svc: Svc, start: Annotated[datetime, Query(alias="from")],
              end: Annotated[datetime, Query(alias="to")]) -> schemas.Usage:
    """Bytes in/out per UTC hour whose start lies in [from, to), and their sums."""
    lo, hi = _utc_naive(start), _utc_naive(end)
    if hi <= lo:
        raise HTTPException(422, "'to' must be after 'from'")
    rows = list(TrafficUsage.select().where(
        (TrafficUsage.service_id == svc.id) & (TrafficUsage.period_start >= lo)
        & (TrafficUsage.period_start < hi)).order_by(TrafficUsage.period_start))
    hours = [schemas.UsageHour(period_start=r.period_start.replace(tzinfo=UTC),
                               bytes_in=int(r.bytes_in), bytes_out=int(r.bytes_out))
             for r in rows]
    return schemas.Usage.model_validate({"service_id": svc.id, "from": lo.replace(tzinfo=UTC),
                                         "to": hi.replace(tzinfo=UTC),
                                         "bytes_in": int(sum(r.bytes_in for r in rows)),
                                         "bytes_out": int(sum(r.bytes_out for r in rows)),
                                         "hours": hours})


@router.get("/services/{service_id}/graphs", response_model=schemas.Graph,
            responses={**NOT_FOUND, 409: {"model": schemas.Problem},
                       503: {"model": schemas.Problem}})
def get_graph(svc: Svc, settings: Cfg, metric: schemas.Metric,
              timeframe: schemas.Timeframe = "hour") -> schemas.Graph:
    """One metric's series over a time frame, from Proxmox ``rrddata`` (average per row)."""
    if not svc.vmid or not svc.node:
        raise HTTPException(409, f"service {svc.id} has no VM")
    rows = _pve_or_503(settings, "get", f"nodes/{svc.node}/qemu/{svc.vmid}/rrddata",
                       timeframe=timeframe, cf="AVERAGE")
    fields = GRAPH_FIELDS[metric]
    return schemas.Graph(metric=metric, timeframe=timeframe, series=fields, points=[
        schemas.GraphPoint(time=int(r["time"]), values={f: r.get(f) for f in fields})
        for r in rows])


@router.post("/services/{service_id}/console", response_model=schemas.ConsoleTicket,
             responses={**NOT_FOUND, 409: {"model": schemas.Problem},
                        503: {"model": schemas.Problem}})
def open_console(svc: Svc, who: Who, settings: Cfg, request: Request) -> schemas.ConsoleTicket:
    """A noVNC console ticket (PVE ``vncproxy`` with websocket). Refused for suspended and
    terminated services. Issuing is audit-logged; the ticket is never logged."""
    if svc.status in CONSOLE_REFUSED or svc.suspended or not svc.vmid or not svc.node:
        state = "suspended" if svc.suspended else svc.status
        raise HTTPException(409, f"console refused: service {svc.id} is {state}")
    if settings.proxmox is None:
        raise HTTPException(503, "no Proxmox connection configured")
    path = f"nodes/{svc.node}/qemu/{svc.vmid}"
    data = _pve_or_503(settings, "post", f"{path}/vncproxy", websocket=1)
    audit(svc, "api_console_ticket_issued", who, request, vmid=svc.vmid, port=data["port"])
    port = int(data["port"])
    return schemas.ConsoleTicket(
        node=svc.node, vmid=svc.vmid, pve_host=settings.proxmox.host,
        pve_port=settings.proxmox.port, port=port, ticket=data["ticket"], user=data["user"],
        upid=data["upid"], cert=data.get("cert"),
        websocket_path=(f"/api2/json/{path}/vncwebsocket?port={port}"
                        f"&vncticket={quote(data['ticket'], safe='')}"))


@router.get("/isos", response_model=list[schemas.IsoList],
            responses={503: {"model": schemas.Problem}})
def list_isos(who: Who, settings: Cfg) -> list[schemas.IsoList]:
    """ISO images on the products' ISO storages, grouped as the manual says (a client token
    sees its own product's storage only)."""
    from steps.lifecycle import iso_group

    products = Product.select().where(Product.iso_storage.is_null(False))
    if who.service_id is not None:
        svc = Service.get_or_none(Service.id == who.service_id)
        products = products.where(Product.id == (svc.product_id if svc else -1))
    storages = sorted({str(p.iso_storage) for p in products})
    if not storages:
        return []
    node = _pve_or_503(settings, "get", "nodes")[0]["node"]
    out = []
    for storage in storages:
        groups: dict[str, list[str]] = {}
        for item in _pve_or_503(settings, "get", f"nodes/{node}/storage/{storage}/content",
                                content="iso"):
            name = item["volid"].split("/", 1)[-1]
            groups.setdefault(iso_group(name), []).append(name)
        ordered = sorted(groups.items(), key=lambda kv: (kv[0] == "OTHER", kv[0]))
        out.append(schemas.IsoList(storage=storage, groups=[
            schemas.IsoGroup(group=g, isos=sorted(n)) for g, n in ordered]))
    return out


@router.post("/services/{service_id}/client-token", response_model=schemas.ClientToken,
             responses={**NOT_FOUND, 403: {"model": schemas.Problem},
                        409: {"model": schemas.Problem}})
def mint_client_token(svc: Svc, who: Who, settings: Cfg,
                      request: Request) -> schemas.ClientToken:
    """(billing tokens only) the token that lets one client read only this service."""
    if who.service_id is not None:
        raise HTTPException(403, "only a billing token may mint client tokens")
    if not settings.api.client_token_key:
        raise HTTPException(409, "no client_token_key configured")
    audit(svc, "api_client_token_issued", who, request)
    return schemas.ClientToken(service_id=svc.id,
                               token=client_token(settings.api.client_token_key, svc.id))


_publishers = threading.local()


def _publish(settings: Settings, body: bytes, routing_key: str, message_id: str) -> None:
    """Confirmed publish on this thread's connection; the topology is declared once per thread."""
    pub = getattr(_publishers, "pub", None)
    if pub is None:
        topo = messaging.Topology(settings.namespace)
        messaging.declare_if_allowed(settings.amqp_url, topo)  # see pvekvm.grants
        pub = _publishers.pub = messaging.Publisher(settings.amqp_url, topo)
    try:
        pub.publish_order(body, routing_key, message_id=message_id)
    except Exception:
        pub.close()
        _publishers.pub = None
        raise


@router.post("/events", status_code=202, response_model=schemas.EventAccepted,
             responses={403: {"model": schemas.Problem}, 422: {"model": schemas.Problem},
                        503: {"model": schemas.Problem}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "description":
                            "an order event, exactly as on the orders exchange"}}}}})
async def post_event(request: Request, who: Who, settings: Cfg) -> schemas.EventAccepted:
    """Accept one order event (same JSON as the orders exchange) and publish it with publisher
    confirms; 202 once the broker confirmed. Billing tokens only."""
    if who.service_id is not None:
        raise HTTPException(403, "only a billing token may post events")
    body = bytearray()
    async for chunk in request.stream():  # never hold more than one event's worth
        body += chunk
        if len(body) > MAX_EVENT_BYTES:
            raise HTTPException(422, f"event too large: over {MAX_EVENT_BYTES} bytes")
    try:
        event = parse_event(bytes(body))
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None
    if event.occurred_at is None:
        event = replace(event, occurred_at=datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        await run_in_threadpool(_publish, settings, event.to_json(), event.routing_key,
                                event.idempotency_key)
    except Exception as exc:  # noqa: BLE001 - broker down or refused after retries
        raise HTTPException(503, f"event not published: {type(exc).__name__}") from None
    return schemas.EventAccepted(idempotency_key=event.idempotency_key, type=event.type,
                                 service_id=event.service_id)


# --------------------------------------------------------------------------- client reverse DNS

RDNS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 409: {"model": schemas.Problem, "description": "the service does not hold "
                       "that address"},
    422: {"model": schemas.Problem}, 503: {"model": schemas.Problem}}


async def _order_rdns(svc: Service, who: Principal, request: Request, settings: Settings,
                      build: Any) -> schemas.EventAccepted:
    """Publish an rdns_set/rdns_reset order for one of the service's own addresses (the client's
    token may); intake checks the address again when the order's turn comes."""
    try:
        event: Event = build(service_id=svc.id, occurred_at=datetime.now(UTC).isoformat(
            timespec="seconds"), idempotency_key=fresh_idempotency_key("rdns", svc.id))
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None
    address = event.address  # type: ignore[attr-defined]  # canonical form
    if held_row(svc.id, address) is None:
        raise HTTPException(409, f"address {address} is not held by service {svc.id}")
    try:
        await run_in_threadpool(_publish, settings, event.to_json(), event.routing_key,
                                event.idempotency_key)
    except Exception as exc:  # noqa: BLE001 - broker down or refused after retries
        raise HTTPException(503, f"event not published: {type(exc).__name__}") from None
    audit(svc, f"api_{event.type}", who, request, address=address)
    return schemas.EventAccepted(idempotency_key=event.idempotency_key, type=event.type,
                                 service_id=event.service_id)


@router.put("/services/{service_id}/rdns/{address}", status_code=202,
            response_model=schemas.EventAccepted, responses=RDNS_RESPONSES)
async def set_rdns(svc: Svc, who: Who, settings: Cfg, request: Request, address: str,
                   body: schemas.RdnsRequest) -> schemas.EventAccepted:
    """Set the PTR of one of the service's addresses to ``hostname`` (202 once ordered)."""
    return await _order_rdns(svc, who, request, settings, lambda **kw: RdnsSetEvent(
        address=address, hostname=body.hostname, **kw))


@router.delete("/services/{service_id}/rdns/{address}", status_code=202,
               response_model=schemas.EventAccepted, responses=RDNS_RESPONSES)
async def reset_rdns(svc: Svc, who: Who, settings: Cfg, request: Request,
                     address: str) -> schemas.EventAccepted:
    """Give the address's PTR back to the service's host name (202 once ordered)."""
    return await _order_rdns(svc, who, request, settings, lambda **kw: RdnsResetEvent(
        address=address, **kw))
