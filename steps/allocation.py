"""IP addresses and VMIDs, allocated under unique indexes: two orders never share one."""

from __future__ import annotations

from datetime import datetime

from peewee import IntegrityError, fn

from pvekvm import addresses, service_changes
from pvekvm.models import IpAddress, IpPool, VmidAllocation, database
from pvekvm.proxmox import ProxmoxError
from steps.context import StepContext
from steps.machine import Done, StepFailed, StepResult

_TAKE_FREE_IP = (
    "UPDATE ip_addresses SET service_id = %s, slot = %s, released_at = NULL, ptr = NULL "
    "WHERE pool_id = %s AND service_id IS NULL ORDER BY id LIMIT 1")
MAX_PREFIX_TRIES = 4096


def allocate_ips(ctx: StepContext) -> StepResult:
    """VMSetDedicatedIp: one IPv4 (and an IPv6 address or routed prefix when ordered and the
    package has a v6 pool), plus the package's ``extra_ipv4`` additional IPv4 from the same
    pool (slots 1..N). A package with fewer extras gives the surplus back (highest slots); a
    DHCP package allocates none, and a service moving to one gives its addresses back. Every
    slot is taken under the unique keys (address; service, version, slot): two orders never
    get one address or prefix, and a retried step never takes a second one."""
    if ctx.product.dhcp:
        released = release_ips(ctx.service.id)
        ctx.addresses_changed()
        return Done(f"DHCP package: {released} address(es) released" if released
                    else "DHCP package: no address to allocate", skipped=not released)
    pool4 = ctx.product.ip_pool_id
    extras = int(ctx.product.extra_ipv4 or 0) if pool4 is not None else 0
    wanted = [(4, pool4, 0)] + [(4, pool4, slot) for slot in range(1, extras + 1)]
    if ctx.service.want_ipv6:
        wanted.append((6, ctx.product.ip6_pool_id, 0))
    got: list[str] = []
    surplus = _release_extras_above(ctx.service.id, extras)
    changed = surplus > 0
    if surplus:
        ctx.addresses_changed()
    for version, pool_id, slot in wanted:
        if pool_id is None:
            continue
        held = ctx.address(version, slot)
        if held is None or held.pool_id != pool_id:
            changed = True
            if held is not None:  # package moved to another pool: give the old one back
                release_ips(ctx.service.id, version, slot)
            _take(ctx, version, pool_id, slot)
            ctx.addresses_changed()
            held = ctx.address(version, slot)
            if held is None:
                raise StepFailed(f"IPv{version} address taken but not found")
        got.append(addresses.cidr(held))
    if surplus:
        got.append(f"{surplus} extra released")
    if not got:
        return Done("DHCP package: no address to allocate", skipped=True)
    return Done(", ".join(got), skipped=not changed)


def _take(ctx: StepContext, version: int, pool_id: int, slot: int) -> None:
    cursor = database.execute_sql(_TAKE_FREE_IP, (ctx.service.id, slot, pool_id))
    if cursor.rowcount == 1:
        return
    pool = IpPool.get_by_id(pool_id)
    if pool.assign is None:
        raise StepFailed(f"IPv{version} pool {pool.name} has no free address")
    _insert_next_prefix(ctx.service.id, pool, slot)


def _insert_next_prefix(service_id: int, pool: IpPool, slot: int) -> None:
    """A prefix pool keeps a row only for prefixes handed out at least once: the next one is
    inserted, starting after the pool's row count; the unique address key lets one of two
    racers have it, the other tries the next."""
    assign = int(pool.assign or 0)
    index = IpAddress.select().where(IpAddress.pool_id == pool.id).count()
    for _ in range(MAX_PREFIX_TRIES):
        try:
            prefix = addresses.nth_prefix(pool.network, assign, index)
        except ValueError:
            raise StepFailed(f"IPv6 prefix pool {pool.name} has no free /{pool.assign}") from None
        try:
            with database.atomic():
                IpAddress.insert(pool_id=pool.id, address=prefix, version=6,
                                 prefixlen=assign, service_id=service_id,
                                 slot=slot).execute()
            return
        except IntegrityError:
            index += 1
    raise StepFailed(f"IPv6 prefix pool {pool.name}: no free /{pool.assign} found after "
                     f"{MAX_PREFIX_TRIES} tries")


def _release_extras_above(service_id: int, extras: int) -> int:
    return IpAddress.update(service_id=None, released_at=fn.NOW(3), ptr=None, slot=0).where(
        (IpAddress.service_id == service_id) & (IpAddress.version == 4)
        & (IpAddress.slot > extras)).execute()


def release_ips(service_id: int, version: int | None = None, slot: int | None = None) -> int:
    """Give a service's addresses back to the free pool (terminate, pool change)."""
    cond = IpAddress.service_id == service_id
    if version is not None:
        cond &= IpAddress.version == version
    if slot is not None:
        cond &= IpAddress.slot == slot
    return IpAddress.update(service_id=None, released_at=fn.NOW(3), ptr=None, slot=0).where(
        cond).execute()


def reserve_vmid(ctx: StepContext) -> StepResult:
    """A VMID never given out before (``vmid_allocations`` keeps every VMID ever handed out, so
    a terminated service's VMID is not reused) and free in Proxmox (``nextid?vmid=``). Two
    workers racing for the same number: the primary key lets one win, the other takes the
    next. The range is the service's cluster's (``[[clusters]] vmid_min/vmid_max``, else the
    engine's); one VMID is given once in the whole fleet, whatever the cluster: every table
    keyed by VMID stays unambiguous and a VM moved to another cluster keeps its id."""
    if ctx.service.vmid is not None:
        return Done(f"VMID {ctx.service.vmid} already reserved", skipped=True)
    eng, cluster = ctx.settings.engine, ctx.settings.cluster(ctx.service.cluster)
    lo = cluster.vmid_min if cluster and cluster.vmid_min is not None else eng.vmid_min
    hi = cluster.vmid_max if cluster and cluster.vmid_max is not None else eng.vmid_max
    top = (VmidAllocation.select(fn.MAX(VmidAllocation.vmid))
           .where(VmidAllocation.vmid.between(lo, hi)).scalar())
    candidate = max(lo, (top or 0) + 1)
    for _ in range(200):
        if candidate > hi:
            raise StepFailed("VMID range exhausted")
        if _free_in_proxmox(ctx, candidate):
            try:
                with database.atomic():
                    VmidAllocation.insert(vmid=candidate, service_id=ctx.service.id,
                                          allocated_at=datetime.now()).execute()
                    service_changes.take_vmid(ctx.service, candidate, only_if_none=True)
            except IntegrityError:
                candidate += 1
                continue
            return Done(f"VMID {candidate}")
        candidate += 1
    raise StepFailed("no free VMID found after 200 candidates")


def _free_in_proxmox(ctx: StepContext, vmid: int) -> bool:
    try:
        ctx.pve.get("cluster/nextid", vmid=vmid)
    except ProxmoxError as exc:
        if exc.status == 400:  # "VM <id> already exists"
            return False
        raise
    return True


def reserve_given_vmid(service_id: int, vmid: int) -> str | None:
    """Adoption: the service takes the VMID its existing VM has; ``vmid_allocations`` then
    keeps it from ever being handed out again. Why not, when it was given out before (to this
    service: a no-op)."""
    holder = VmidAllocation.get_or_none(VmidAllocation.vmid == vmid)
    if holder is not None and holder.service_id != service_id:
        return f"VMID {vmid} was already given to service {holder.service_id}"
    try:
        with database.atomic():
            if holder is None:
                VmidAllocation.insert(vmid=vmid, service_id=service_id,
                                      allocated_at=datetime.now()).execute()
            service_changes.take_vmid(service_id, vmid)
    except IntegrityError:
        return f"VMID {vmid} is held by another service"
    return None
