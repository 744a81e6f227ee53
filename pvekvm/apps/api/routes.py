"""The ``/v1`` endpoints. Reads come from the engine's tables (read-only) and from Proxmox; the
API itself writes only ``audit_log`` and publishes order events."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pvekvm import (
    backup_reach,
    dnssync,
    languages,
    mail,
    messaging,
    overage,
    picker,
    sshkeys,
    tokens,
)
from pvekvm import pve_reads as pve
from pvekvm import secrets as secretbox
from pvekvm.addresses import cidr, held, held_row, host_address
from pvekvm.apps.api import schemas
from pvekvm.apps.api.auth import Principal, authenticate
from pvekvm.config import Settings
from pvekvm.console import sessions as console_sessions
from pvekvm.forwarded import real_caller
from pvekvm.lifecycle import GONE, SUSPENDED_STATUSES, ServiceStatus
from pvekvm.limits import MAX_SERVICE_ID
from pvekvm.models import (
    AuditLog,
    Backup,
    BackupSchedule,
    ClientFirewallRules,
    Operation,
    Product,
    ProductLocation,
    Service,
    Snapshot,
    StepRun,
    Template,
    TrafficUsage,
)
from pvekvm.oplog import format_step
from pvekvm.wire.orders import (
    MAX_EVENT_BYTES,
    Event,
    InvalidEvent,
    RdnsResetEvent,
    RdnsSetEvent,
    fresh_idempotency_key,
    parse_event,
)

GRAPH_FIELDS: dict[str, list[str]] = {
    "cpu": ["cpu", "maxcpu"], "memory": ["mem", "maxmem"], "network": ["netin", "netout"],
    "disk": ["diskread", "diskwrite"]}
CONSOLE_REFUSED = SUSPENDED_STATUSES | GONE

bearer = HTTPBearer(auto_error=False, description="billing token or per-service client token")
router = APIRouter(prefix="/v1", responses={
    400: {"model": schemas.Problem, "description": "a body that is not JSON"},
    401: {"model": schemas.Problem, "description": "no token or a wrong token"},
    422: {"model": schemas.Problem, "description": "the request is refused: detail says why; "
          "errors lists each field's problem"},
    503: {"model": schemas.Problem, "description": "the database (or Proxmox, or the broker) "
          "is unavailable"}})
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Problem,
                   "description": "no such service, or not the token's service"}}


# --------------------------------------------------------------------------- dependencies

def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def principal(request: Request,
              creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
              settings: Annotated[Settings, Depends(settings_of)]) -> Principal:
    if creds is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    who = authenticate(settings.api, creds.credentials)
    if who is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = who.name  # for the refusal record (pvekvm.apps.api.refusals)
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


def caller_address(request: Request, trusted: tuple[str, ...]) -> str | None:
    """The caller's address (:func:`pvekvm.forwarded.real_caller`). The server runs with
    uvicorn's own proxy headers off, so the peer here is the real one."""
    peer = request.client.host if request.client else None
    return real_caller(peer, request.headers.getlist("x-forwarded-for"), trusted)


def audit(svc: Service | int, event: str, who: Principal, request: Request,
          **extra: Any) -> None:
    """Who read what, from where (:func:`caller_address`); never the secret itself."""
    settings: Settings = request.app.state.settings
    detail = {"by": who.name, "from": caller_address(request, settings.api.trusted_proxies),
              **extra}
    AuditLog.create(service_id=svc if isinstance(svc, int) else svc.id, event=event,
                    detail=json.dumps(detail, sort_keys=True), created_at=datetime.now())


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


def _this_life(svc: Service) -> Any:
    """Operations of the service's present life: a reused id's earlier life (another client,
    maybe) is not shown (both created_at come from the database clock)."""
    cond = Operation.service_id == svc.id
    return cond & (Operation.created_at >= svc.created_at) if svc.created_at else cond


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
        st = pve.call(settings.proxmox_of(svc.cluster), settings.api.proxmox_timeout_s, "get",
                      f"nodes/{svc.node}/qemu/{svc.vmid}/status/current")
    except pve.Unreachable:
        return None, True, None
    except pve.PveError as exc:
        return None, exc.status == 595, f"HTTP {exc.status}: {exc}"
    try:
        cfg = pve.call(settings.proxmox_of(svc.cluster), settings.api.proxmox_timeout_s, "get",
                       f"nodes/{svc.node}/qemu/{svc.vmid}/config")
    except (pve.Unreachable, pve.PveError):
        cfg = {}  # the power state stands; the ISO is not known this time
    from steps.lifecycle import mounted_iso

    return schemas.LiveStatus(iso=mounted_iso(cfg),
        power=str(st.get("status", "unknown")), qmpstatus=st.get("qmpstatus"),
        uptime_s=int(st.get("uptime") or 0), cpu=float(st.get("cpu") or 0),
        cpus=int(st.get("cpus") or 0), mem_bytes=int(st.get("mem") or 0),
        maxmem_bytes=int(st.get("maxmem") or 0)), False, None


def _pve_or_503(settings: Settings, cluster: str | None, method: str, path: str,
                **params: Any) -> Any:
    """A call to ``cluster``'s API (None: the default cluster), its failures as HTTP errors."""
    try:
        return pve.call(settings.proxmox_of(cluster), settings.api.proxmox_timeout_s, method,
                        path, **params)
    except pve.Unreachable:
        raise HTTPException(503, "proxmox_unreachable") from None
    except pve.PveError as exc:
        raise HTTPException(502, f"Proxmox answered HTTP {exc.status}: {exc}") from None


# --------------------------------------------------------------------------- endpoints

def _mail_language(settings: Settings, language: str | None) -> str:
    try:
        return mail.template_language(settings.templates_dir, "vm_ready", language)
    except mail.TemplateError:  # no templates at all: the engine's mail steps will say so
        return languages.DEFAULT


@router.get("/services/{service_id}", response_model=schemas.ServiceView, responses=NOT_FOUND)
def get_service(svc: Svc, settings: Cfg) -> schemas.ServiceView:
    """Status, placement, addresses, product, the running operation and live power state."""
    product = Product.get_or_none(Product.id == svc.product_id)
    addresses = held(svc.id)
    ptrs = dnssync.ptrs(svc.id)
    live, unreachable, error = _live(settings, svc)
    return schemas.ServiceView(
        id=svc.id, client_id=svc.client_id, status=svc.status, vmid=svc.vmid, node=svc.node,
        hostname=svc.hostname, product=product.name if product else None,
        addresses=[schemas.Address(address=host_address(a), version=a.version,
                                   primary=a.slot == 0, routed_prefix=None if a.prefixlen is None
                                   else cidr(a), **_ptr(ptrs.get(host_address(a))))
                   for a in addresses],
        operation=_current(svc), live=live, proxmox_unreachable=unreachable,
        proxmox_error=error, throttled_period=f"{svc.throttled_period:%Y-%m}"
        if svc.throttled_period else None, language=svc.language,
        mail_language=_mail_language(settings, svc.language),
        rescue=svc.rescue_before is not None,
        ssh_keys=[schemas.SshKeyView(**v) for v in sshkeys.views(svc.ssh_keys)],
        password_login=_password_login(product, svc))


def _password_login(product: Product | None, svc: Service) -> bool:
    if product is None or product.ssh_pwauth:
        return True
    template = Template.get_or_none(Template.id == svc.template_id)
    return template is not None and template.os_type == "windows"


def _ptr(row: Any) -> dict[str, Any]:
    if row is None:
        return {"ptr": None, "ptr_published": False}
    return {"ptr": row.content, "ptr_published": bool(row.synced) and row.held_by is None}


@router.get("/services/{service_id}/firewall-rules", response_model=schemas.FirewallRulesView,
            responses=NOT_FOUND)
def get_firewall_rules(svc: Svc) -> schemas.FirewallRulesView:
    """The client's own firewall rules as last saved (set them with a firewall_rules_set
    order); ``applied`` says how many the package lets stand."""
    from steps.firewall import allowed_rules, rules_problem

    product = Product.get_by_id(svc.product_id)
    row = ClientFirewallRules.get_or_none(ClientFirewallRules.service_id == svc.id)
    rules = json.loads(row.rules) if row is not None else []
    pending = Operation.select().where(
        (Operation.service_id == svc.id) & (Operation.kind == "firewall_rules_set")
        & Operation.status.in_(("queued", "running", "paused"))).exists()
    return schemas.FirewallRulesView(
        service_id=svc.id, rules=[schemas.FirewallRule(**r) for r in rules],
        allowed=0 if rules_problem(product, 0) else product.client_fw_rules,
        applied=len(allowed_rules(product, rules)), pending=pending,
        updated_at=row.updated_at if row is not None else None)


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
    ops = Operation.select().where(_this_life(svc)).order_by(Operation.id.desc()).limit(limit)
    return [_operation(op) for op in ops]


@router.get("/services/{service_id}/operations/{operation_id}",
            response_model=schemas.OperationView, responses=NOT_FOUND)
def get_operation(svc: Svc, operation_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
                  ) -> schemas.OperationView:
    op = Operation.get_or_none((Operation.id == operation_id) & _this_life(svc))
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
    views = []
    for b in rows:
        why = backup_reach.unreachable(b.node, b.storage, svc.node)
        views.append(schemas.BackupView(
            id=b.id, volid=b.volid, storage=b.storage, node=b.node, size_bytes=b.size_bytes,
            scheduled=bool(b.scheduled), note=b.note, created_at=b.created_at,
            restorable=why is None, not_restorable_because=why))
    return views


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
    """Bytes in/out per UTC hour whose start lies in [from, to), and their sums: hours of the
    service's present life only (a reused id's earlier life, maybe another client's, is not
    shown)."""
    lo, hi = _utc_naive(start), _utc_naive(end)
    if hi <= lo:
        raise HTTPException(422, "'to' must be after 'from'")
    lo = max(lo, overage.life_start_hour(svc.created_at))
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
    rows = _pve_or_503(settings, svc.cluster, "get",
                       f"nodes/{svc.node}/qemu/{svc.vmid}/rrddata",
                       timeframe=timeframe, cf="AVERAGE")
    fields = GRAPH_FIELDS[metric]
    return schemas.Graph(metric=metric, timeframe=timeframe, series=fields, points=[
        schemas.GraphPoint(time=int(r["time"]), values={f: r.get(f) for f in fields})
        for r in rows])


@router.post("/services/{service_id}/console", response_model=schemas.ConsoleAccess,
             responses={**NOT_FOUND, 403: {"model": schemas.Problem},
                        409: {"model": schemas.Problem}})
def open_console(svc: Svc, who: Who, settings: Cfg, request: Request,
                 body: schemas.ConsoleRequest | None = None) -> schemas.ConsoleAccess:
    """A single-use console token and the console proxy's page for it (``url``: link or iframe
    it). The token connects once, within ``[console] token_ttl_s``, for this life of the
    service, and no longer than the client token that asked for it; with ``[console]
    bind_client_address`` only from the client's address (a client token: the caller's; a
    billing token: ``client_address`` when given). Refused for a service without a VM or one
    suspended or terminated. No Proxmox credential is in the answer: the proxy holds them.
    Audit-logged, never the token."""
    if who.is_client and body is not None and body.client_address is not None:
        raise HTTPException(403, "only a billing token may name the client's address")
    if (svc.status in CONSOLE_REFUSED or svc.suspended or not svc.vmid or not svc.node
            or svc.created_at is None):
        state = ServiceStatus.SUSPENDED if svc.suspended else svc.status
        raise HTTPException(409, f"console refused: service {svc.id} is {state}"
                            + ("" if svc.vmid else " and has no VM"))
    console = settings.console
    address: str | None = None
    if console.bind_client_address:
        address = (str(body.client_address) if body is not None and body.client_address
                   else caller_address(request, settings.api.trusted_proxies)
                   if who.is_client else None)
    minted = console_sessions.mint(svc.id, svc.client_id, svc.created_at, console.token_ttl_s,
                                   who.name, who.token_id, address)
    if minted is None:
        raise HTTPException(409, f"console refused: service {svc.id} was suspended, "
                            "terminated or re-created meanwhile")
    audit(svc, "api_console_token_issued", who, request, session=minted.session_id,
          bound_address=address, ttl_s=console.token_ttl_s)
    path = f"/console/?service={svc.id}&token={minted.token}"
    return schemas.ConsoleAccess(service_id=svc.id, token=minted.token, path=path,
                                 url=console.public_url.rstrip("/") + path
                                 if console.public_url else None,
                                 expires_at=minted.connect_by, bound_address=address)


@router.delete("/services/{service_id}/console", status_code=204,
               responses={**NOT_FOUND, 403: {"model": schemas.Problem}})
def close_consoles(svc: Svc, who: Who, request: Request) -> None:
    """(billing tokens only) end every open console session of the service: the proxies close
    them within ``[console] check_interval_s``. Audit-logged."""
    if who.is_client:
        raise HTTPException(403, "only a billing token may close the service's consoles")
    ended = console_sessions.cut_service(svc.id, f"closed by {who.name}")
    audit(svc, "api_console_sessions_closed", who, request, sessions=ended)


@router.get("/isos", response_model=list[schemas.IsoList],
            responses={503: {"model": schemas.Problem}})
def list_isos(who: Who, settings: Cfg) -> list[schemas.IsoList]:
    """ISO images on the products' ISO storages, grouped as the manual says (a client token
    sees its own product's storage only, in its service's cluster; a billing token every
    product's, in each cluster offering it, a storage's lists merged by name)."""
    from pvekvm.isos import iso_group

    products = Product.select().where(Product.iso_storage.is_null(False))
    svc = None
    if who.service_id is not None:
        svc = Service.get_or_none(Service.id == who.service_id)
        products = products.where(Product.id == (svc.product_id if svc else -1))
    places: set[tuple[str, str]] = set()
    for p in products:
        clusters = {str(p.cluster)} | {str(loc.cluster) for loc in ProductLocation.select(
            ProductLocation.cluster).where(ProductLocation.product_id == p.id)}
        for cluster in ({str(svc.cluster)} if svc is not None else clusters):
            places.add((cluster, str(p.iso_storage)))
    if not places:
        return []
    first_node: dict[str, str] = {}
    merged: dict[str, dict[str, set[str]]] = {}
    for cluster, storage in sorted(places):
        if cluster not in first_node:
            first_node[cluster] = _pve_or_503(settings, cluster, "get", "nodes")[0]["node"]
        groups = merged.setdefault(storage, {})
        for item in _pve_or_503(settings, cluster, "get",
                                f"nodes/{first_node[cluster]}/storage/{storage}/content",
                                content="iso"):
            name = item["volid"].split("/", 1)[-1]
            groups.setdefault(iso_group(name), set()).add(name)
    out = []
    for storage, groups in sorted(merged.items()):
        ordered = sorted(groups.items(), key=lambda kv: (kv[0] == "OTHER", kv[0]))
        out.append(schemas.IsoList(storage=storage, groups=[
            schemas.IsoGroup(group=g, isos=sorted(n)) for g, n in ordered]))
    return out


@router.get("/products", response_model=schemas.Catalog,
            responses={403: {"model": schemas.Problem}})
def list_products(who: Who) -> schemas.Catalog:
    """(billing tokens only) the catalog's products and templates, for billing's product setup
    (e.g. the WHMCS module's dropdowns); placement (nodes, storages, pools) is not shown."""
    if who.is_client:
        raise HTTPException(403, "only a billing token may read the catalog")
    templates = {t.id: t for t in Template.select().order_by(Template.name)}
    elsewhere: dict[int, set[str]] = {}
    for loc in ProductLocation.select(ProductLocation.product_id, ProductLocation.cluster):
        elsewhere.setdefault(int(loc.product_id), set()).add(str(loc.cluster))
    products = list(Product.select().order_by(Product.name))
    offered = {str(p.cluster) for p in products}.union(*elsewhere.values())
    return schemas.Catalog(locations=sorted(offered), products=[schemas.ProductView(
        name=p.name, template=templates[p.template_id].name if p.template_id in templates
        else None, templates=[t.name for t in picker.offered(p)],
        cores=p.cores, memory_mb=p.memory_mb, disk_gb=p.disk_gb,
        add_disk_gb=p.add_disk_gb, net_rate_mbps=float(p.net_rate_mbps or 0),
        extra_ipv4=p.extra_ipv4, ipv6=p.ip6_pool_id is not None,
        snapshot_limit=p.snapshot_limit, backup_limit=p.backup_limit,
        iso_storage=p.iso_storage, traffic_quota_gb=p.traffic_quota_gb,
        cpu_type=p.cpu_type, cpulimit=float(p.cpulimit) if p.cpulimit is not None else None,
        cpuunits=p.cpuunits, balloon_mb=p.balloon_mb, client_fw_rules=p.client_fw_rules,
        locations=sorted({str(p.cluster)} | elsewhere.get(int(p.id), set())))
        for p in products],
        templates=[schemas.TemplateView(name=t.name, os_user=t.os_user)
                   for t in templates.values()])


def _offer(product: Product, current: int | None = None) -> schemas.TemplateOffer:
    return schemas.TemplateOffer(product=product.name, templates=[schemas.TemplateChoice(
        name=t.name, os_family=picker.os_family(t), os_type=picker.os_type(t),
        os_user=t.os_user, default=t.id == product.template_id,
        current=None if current is None else t.id == current) for t in picker.offered(product)])


@router.get("/services/{service_id}/templates", response_model=schemas.TemplateOffer,
            responses=NOT_FOUND)
def service_templates(svc: Svc) -> schemas.TemplateOffer:
    """The OS picker for a service: the templates its product offers (reinstall to another is
    refused), the one installed now marked ``current``."""
    product = Product.get_or_none(Product.id == svc.product_id)
    if product is None:
        raise HTTPException(404, f"no product for service {svc.id}")
    return _offer(product, current=svc.template_id)


ProductName = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                                  description="the product's name, as create names it")]


@router.get("/products/{name}/templates", response_model=schemas.TemplateOffer,
            responses={403: {"model": schemas.Problem}, 404: {"model": schemas.Problem}})
def product_templates(name: ProductName, who: Who) -> schemas.TemplateOffer:
    """The OS picker of the order form: the templates ``name`` offers. A client token reads
    its own service's product only (another product's offer is refused with 403)."""
    product = Product.get_or_none(Product.name == name)
    if who.is_client:
        svc = Service.get_or_none(Service.id == who.service_id)
        if product is None or svc is None or svc.product_id != product.id:
            raise HTTPException(403, "a client token reads its own service's product only")
    if product is None:
        raise HTTPException(404, f"no product {name!r}")
    return _offer(product)


@router.post("/services/{service_id}/client-token", response_model=schemas.ClientToken,
             responses={**NOT_FOUND, 403: {"model": schemas.Problem},
                        409: {"model": schemas.Problem}, 422: {"model": schemas.Problem}})
def mint_client_token(svc: Svc, who: Who, settings: Cfg, request: Request,
                      body: schemas.ClientTokenRequest | None = None) -> schemas.ClientToken:
    """(billing tokens only) a token that lets the service's client read this service only,
    for this life of the service: it ends at ``expires_at`` (``[api] client_token_ttl_s``, or
    the ``ttl_s`` asked for, cut to that limit), when revoked, or when the service is
    terminated or its id re-created."""
    if who.is_client:
        raise HTTPException(403, "only a billing token may mint client tokens")
    limit = settings.api.client_token_ttl_s
    ttl = min(limit, body.ttl_s if body is not None and body.ttl_s is not None else limit)
    if svc.status in GONE or svc.created_at is None:
        raise HTTPException(409, f"service {svc.id} is {svc.status}: no client token")
    minted = tokens.mint(svc.id, svc.client_id, svc.created_at, ttl, who.name)
    if minted is None:
        raise HTTPException(409, f"service {svc.id} was terminated or re-created meanwhile")
    audit(svc, "api_client_token_issued", who, request, token_id=minted.token_id, ttl_s=ttl)
    return schemas.ClientToken(service_id=svc.id, token=minted.token, token_id=minted.token_id,
                               expires_at=minted.expires_at)


@router.delete("/client-tokens/{token_id}", status_code=204,
               responses={403: {"model": schemas.Problem}, 404: {"model": schemas.Problem}})
def revoke_client_token(who: Who, request: Request,
                        token_id: Annotated[str, Path(max_length=64)]) -> None:
    """(billing tokens only) revoke one client token at once (the next request with it is
    refused with 401); revoking a revoked token again is no error. Audit-logged."""
    if who.is_client:
        raise HTTPException(403, "only a billing token may revoke client tokens")
    service_id = tokens.service_of(token_id)
    if service_id is None or not who.may_read(service_id):
        raise HTTPException(404, f"no client token {token_id}")
    revoked = tokens.revoke(token_id, f"revoked by {who.name}")
    audit(service_id, "api_client_token_revoked", who, request, token_id=token_id,
          already=not revoked)


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
                 "schema": schemas.event_body_schema()}}}})
async def post_event(request: Request, who: Who, settings: Cfg) -> schemas.EventAccepted:
    """Accept one order event (same JSON as the orders exchange) and publish it with publisher
    confirms; 202 once the broker confirmed. Billing tokens only. ``idempotency_key`` may be
    left out of a create, terminate or backup_schedule (derived from the fields, as the CLI
    does; the answer says which); every other type must carry billing's own key."""
    if who.service_id is not None:
        raise HTTPException(403, "only a billing token may post events")
    body = bytearray()
    async for chunk in request.stream():  # never hold more than one event's worth
        body += chunk
        if len(body) > MAX_EVENT_BYTES:
            raise HTTPException(422, f"event too large: over {MAX_EVENT_BYTES} bytes")
    try:
        event = parse_event(bytes(body), derive_key=True)
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None
    if not who.may_read(event.service_id):
        raise HTTPException(403, f"service {event.service_id} is outside the scope of "
                                 f"{who.name} ([api.scopes])")
    if event.occurred_at is None:
        event = event.stamped(datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        await run_in_threadpool(_publish, settings, event.to_json(), event.routing_key,
                                event.idempotency_key)
    except Exception as exc:  # noqa: BLE001 - broker down or refused after retries
        raise HTTPException(503, f"event not published: {type(exc).__name__}") from None
    return schemas.EventAccepted(idempotency_key=event.idempotency_key, type=event.type,
                                 service_id=event.service_id)


# --------------------------------------------------------------------------- client reverse DNS

IpAddress = Annotated[str, Path(description="an IPv4 or IPv6 address the service holds",
                                json_schema_extra={"anyOf": [{"format": "ipv4"},
                                                             {"format": "ipv6"}]})]
RDNS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 409: {"model": schemas.Problem, "description": "the service does not hold "
                       "that address"},
    422: {"model": schemas.Problem, "description": "a bad address or name, or a name the "
          "product's rdns_policy refuses (pvekvm/rdns_policy.py)"},
    429: {"model": schemas.Problem, "description": "over the service's rate limit; see "
          "Retry-After", "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    503: {"model": schemas.Problem}}


async def _order_rdns(svc: Service, who: Principal, request: Request, settings: Settings,
                      build: Any) -> schemas.EventAccepted:
    """Publish an rdns_set/rdns_reset order for one of the service's own addresses (the client's
    token may); intake checks the address again when the order's turn comes. A name the
    product's rdns_policy refuses is 422, one over the service's rate limits 429 with
    Retry-After; every refusal and every order is audit-logged with the address and name."""
    from pvekvm import rdns_policy
    from pvekvm.apps.api import client_limits

    def refuse(status: int, reason: str, headers: dict[str, str] | None = None,
               **extra: Any) -> HTTPException:
        kind = "api_rdns_limited" if status == 429 else "api_rdns_refused"
        audit(svc, kind, who, request, status=status, reason=reason, **extra)
        return HTTPException(status, reason, headers=headers)

    def limit() -> None:
        over = client_limits.refusal(svc.id, settings, ptr_change=True)
        if over is not None:
            raise refuse(429, over.reason, {"Retry-After": str(over.retry_after_s)}, **named)

    try:
        event: Event = build(service_id=svc.id, occurred_at=datetime.now(UTC).isoformat(
            timespec="seconds"), idempotency_key=fresh_idempotency_key("rdns", svc.id))
    except InvalidEvent as exc:
        raise await run_in_threadpool(refuse, 422, exc.reason) from None
    address = event.address  # type: ignore[attr-defined]  # canonical form
    name = getattr(event, "hostname", None)
    named = {"address": address, **({"hostname": name} if name else {})}
    if held_row(svc.id, address) is None:
        raise await run_in_threadpool(refuse, 409, f"address {address} is not held by service "
                                      f"{svc.id}", **named)
    await run_in_threadpool(limit)  # before any DNS lookup; again under the lock below
    if name is not None:
        product = Product.get_by_id(svc.product_id)
        why = await run_in_threadpool(rdns_policy.problem, svc, address, name,
                                      product.rdns_policy, settings.rdns)
        if why:
            raise await run_in_threadpool(refuse, 422, why, **named)

    def take() -> None:
        """Limit check, publish and audit row as one step per service (the named lock)."""
        with client_limits.serialized(svc.id):
            limit()
            _publish(settings, event.to_json(), event.routing_key, event.idempotency_key)
            audit(svc, f"api_{event.type}", who, request, **named)

    try:
        await run_in_threadpool(take)
    except HTTPException:
        raise
    except client_limits.Busy as exc:
        raise HTTPException(503, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - broker down or refused after retries
        raise HTTPException(503, f"event not published: {type(exc).__name__}") from None
    return schemas.EventAccepted(idempotency_key=event.idempotency_key, type=event.type,
                                 service_id=event.service_id)


@router.put("/services/{service_id}/rdns/{address}", status_code=202,
            response_model=schemas.EventAccepted, responses=RDNS_RESPONSES)
async def set_rdns(svc: Svc, who: Who, settings: Cfg, request: Request, address: IpAddress,
                   body: schemas.RdnsRequest) -> schemas.EventAccepted:
    """Set the PTR of one of the service's addresses to ``hostname`` (202 once ordered): a name
    the service owns or one whose A/AAAA records point at the address, as the product's
    ``rdns_policy`` says; at most ``[rdns] changes_per_hour`` changes per service."""
    return await _order_rdns(svc, who, request, settings, lambda **kw: RdnsSetEvent(
        address=address, hostname=body.hostname, **kw))


@router.delete("/services/{service_id}/rdns/{address}", status_code=202,
               response_model=schemas.EventAccepted, responses=RDNS_RESPONSES)
async def reset_rdns(svc: Svc, who: Who, settings: Cfg, request: Request,
                     address: IpAddress) -> schemas.EventAccepted:
    """Give the address's PTR back to the service's host name (202 once ordered; counts as a
    PTR change for the rate limit)."""
    return await _order_rdns(svc, who, request, settings, lambda **kw: RdnsResetEvent(
        address=address, **kw))
