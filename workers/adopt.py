"""Adoption: a VM made outside pvekvm (by hand, or by the PHP module pvekvm replaces) becomes a
billing service's, without being reinstalled or restarted (``python -m pvekvm adopt``).

What is read from Proxmox first (its config, its backup archives), then recorded in one
transaction by the owners of each kind of row: the service row (workers/intake.py, status
``ready``), its VMID (steps/allocation.py, reserved for good), the addresses its cloud-init
``ipconfigN`` names (pvekvm/addresses.py: each must lie in the package's pool and be held by no
other service), its cloud-init SSH keys (pvekvm/sshkeys.py: a key not recorded is reported), its
backups (steps/backups.py). Then its DNS through the DNS sync (its
ownership rules hold), and last pvekvm's marker in its description (steps/context.py
``marker``), so the steps that follow accept the VM as ours. Any refusal changes nothing.

Invariants: a VMID, an address, a service id is adopted once; adopting the same mapping again
is a no-op that finishes what a crash left undone (backups, DNS, marker); a mapping file of N
lines costs one cluster listing and O(N) work, each line adopted or refused with its reason."""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from peewee import IntegrityError

from pvekvm import addresses, dns, dnssync, jsonsafe, placement, service_changes, sshkeys
from pvekvm.catalog_cache import at_location
from pvekvm.config import Settings
from pvekvm.lifecycle import ServiceStatus
from pvekvm.limits import MAX_CLIENT_ID, MAX_SERVICE_ID, MAX_VMID
from pvekvm.models import (
    AuditLog,
    Product,
    Service,
    Template,
    TemplateReplica,
    VmidAllocation,
    database,
)
from pvekvm.proxmox import Proxmox, ProxmoxError
from pvekvm.validation import is_valid_hostname
from pvekvm.wire.orders import CreateEvent, InvalidEvent
from steps import allocation, backups, pvecfg
from steps.context import marker
from steps.machine import Refused
from workers import intake

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_ENTRIES = 100_000
IPCONFIG = re.compile(r"ipconfig(\d+)")
BASE_VOLUME = re.compile(r"base-(\d+)-disk")


@dataclass(frozen=True)
class Mapping:
    """One VM to adopt: which service, client and package it becomes."""

    vmid: int
    service_id: int
    client_id: int
    product: str
    node: str | None = None
    hostname: str | None = None
    email: str | None = None
    template: str | None = None
    location: str | None = None  # the cluster the VM is in (the run's: ``adopt --cluster``)
    where: str = ""  # "line 3": where a mapping file named it
    position: int = 0  # its place in the file (results are printed in file order)


REQUIRED = ("vmid", "service_id", "client_id", "product")
COLUMNS = tuple(f.name for f in fields(Mapping) if f.name not in ("where", "position"))


@dataclass
class Result:
    mapping: Mapping
    ok: bool
    message: str
    already: bool = False

    def line(self) -> str:
        m = self.mapping
        head = f"{m.where + ': ' if m.where else ''}VM {m.vmid} -> sid:{m.service_id}" \
            if m.vmid else m.where
        verdict = "already adopted" if self.already else "adopted" if self.ok else "refused"
        return f"{head}: {verdict}: {self.message}"


def adopt(settings: Settings, pve: Proxmox, m: Mapping, node_hint: str | None = None,
          listed: bool = True, cluster: str | None = None) -> Result:
    """Adopt one VM (``listed`` False: the cluster listing a file run took does not have it).
    ``pve`` is ``cluster``'s client (None: the default cluster); a mapping naming another
    location is refused (its VM is looked for in another cluster: a run of its own)."""
    run = cluster or settings.default_cluster
    if m.location not in (None, run):
        return Result(m, False, f"location {m.location!r}: this run adopts VMs of cluster "
                      f"{run!r} (adopt --cluster {m.location})")
    m = replace(m, location=run)
    try:
        return _adopt(settings, pve, m, node_hint, listed)
    except Refused as exc:
        return Result(m, False, str(exc))
    except InvalidEvent as exc:
        return Result(m, False, exc.reason)
    except ProxmoxError as exc:
        return Result(m, False, f"Proxmox: {exc}")


def _adopt(settings: Settings, pve: Proxmox, m: Mapping, hint: str | None,
           listed: bool) -> Result:
    product = Product.get_or_none(Product.name == m.product)
    if product is None:
        raise Refused(f"unknown product {m.product!r}")
    # the package as the VM's cluster offers it (its template, node, storage, pools there)
    product = at_location(product, str(m.location), settings.engine.catalog_cache_s)
    existing = Service.get_or_none(Service.id == m.service_id)
    if existing is not None and existing.status != ServiceStatus.TERMINATED:
        if existing.vmid == m.vmid and existing.client_id == m.client_id:
            return _finish(settings, pve, existing, product, m, already=True)
        raise Refused(f"service id {m.service_id} is in use (status {existing.status}, "
                      f"VM {existing.vmid or 'none'})")
    given = VmidAllocation.get_or_none(VmidAllocation.vmid == m.vmid)
    if given is not None:
        raise Refused(f"VMID {m.vmid} is already ours (given to service {given.service_id})")
    found = pve.find_vm(m.vmid, m.node or hint) if listed else None
    if found is None:
        raise Refused(f"VMID {m.vmid} is unknown to Proxmox")
    node, cfg = found
    if m.node and node != m.node:
        raise Refused(f"VM {m.vmid} is on node {node}, not {m.node}")
    _check_vm(m, cfg)
    wanted = _addresses(product, cfg)
    template = _template(m, product, cfg)
    archives = _archives(pve, product, node, m.vmid)
    net0 = pvecfg.parse(str(cfg.get("net0", "")), "model")
    mac = next((v for k, v in net0.items() if ":" in v and k != "bridge"), None)
    hostname = m.hostname or (str(cfg["name"]) if "." in str(cfg.get("name", ""))
                              and is_valid_hostname(str(cfg["name"])) else None)
    keys, refused_keys = _ssh_keys(cfg, settings.engine.max_ssh_keys)
    event = CreateEvent(service_id=m.service_id, client_id=m.client_id, product=m.product,
                        email=m.email or "adopted@invalid.example", hostname=hostname,
                        template=template.name, ipv6=any(v == 6 for _, v, _ in wanted),
                        location=m.location, ssh_keys=tuple(keys) or None)
    try:
        with database.atomic():
            service = intake.create_service(
                event, settings.engine.catalog_cache_s, status=ServiceStatus.READY, node=node,
                macaddr=mac.upper() if mac else None, email=m.email or "",
                username=str(cfg.get("ciuser") or template.os_user))
            if (why := allocation.reserve_given_vmid(service.id, m.vmid)) is not None:
                raise Refused(why)
            service.vmid = m.vmid
            held = []
            for host, _version, slot in wanted:
                row = addresses.claim(service.id, host, slot)
                if isinstance(row, str):
                    raise Refused(row)
                held.append(addresses.cidr(row))
            AuditLog.create(service_id=service.id, event="adopted", created_at=datetime.now(),
                            detail=f"VM {m.vmid} on {node}, product {product.name}, "
                                   f"template {template.name}, addresses {held or 'none'}"
                                   + "".join(f"; {why}" for why in refused_keys))
    except IntegrityError as exc:  # a racing adoption or order took the id, name or VMID
        raise Refused(f"taken meanwhile: {exc.args[-1] if exc.args else exc}") from None
    notes = [f"on {node}", f"addresses {', '.join(held) if held else 'none'}",
             f"template {template.name}", f"user {service.username}",
             f"{len(keys)} SSH key(s)", *refused_keys]
    if node not in placement.allowed_nodes(product):
        notes.append(f"package {product.name} places VMs on "
                     f"{', '.join(placement.allowed_nodes(product))}: a package change "
                     "(drift --fix) moves it there, stopped")
    if not m.email:
        notes.append("no e-mail given: client mail has no recipient until billing sets one")
    return _finish(settings, pve, service, product, m, notes=notes, archives=archives,
                   cfg=cfg)


def _check_vm(m: Mapping, cfg: dict[str, Any]) -> None:
    if str(cfg.get("template", "0")) == "1":
        raise Refused(f"VMID {m.vmid} is a template, not a VM")
    if cfg.get("lock"):
        raise Refused(f"VM {m.vmid} is locked ({cfg['lock']}): adopt it once its task ends")
    marks = re.findall(r"pvekvm:service=(\d+)", str(cfg.get("description", "")))
    if any(int(sid) != m.service_id for sid in marks):
        raise Refused(f"VM {m.vmid} carries pvekvm's marker for service "
                      f"{','.join(sorted(set(marks)))}: it is already ours")


def _ssh_keys(cfg: dict[str, Any], limit: int) -> tuple[list[str], list[str]]:
    """The VM's cloud-init ``sshkeys`` (URL-encoded, one key a line, as PVE stores it), each
    checked as create's keys are (:mod:`pvekvm.sshkeys`): the canonical lines of the good ones,
    at most ``limit``, and one sentence per key not recorded (by position, never quoting it).
    The VM keeps every key it has (its authorized_keys is not touched); a later reinstall or
    password reset sets only the recorded ones."""
    raw = urllib.parse.unquote(str(cfg.get("sshkeys") or ""))
    lines = [line.strip() for line in raw.split("\n") if line.strip()]
    good: list[str] = []
    refused: list[str] = []
    seen: set[str] = set()
    for at, line in enumerate(lines, 1):
        try:
            key = sshkeys.parse_key(line)
        except sshkeys.BadKey as exc:
            refused.append(f"SSH key {at} of the VM not recorded: {exc}")
            continue
        if key.blob in seen:
            continue  # the same key twice in the VM's config: recorded once
        if len(good) >= limit:
            refused.append(f"SSH key {at} of the VM not recorded: more than {limit} keys "
                           "([engine] max_ssh_keys)")
            continue
        seen.add(key.blob)
        good.append(key.line)
    try:
        sshkeys.parse_keys(good)  # together within what one PVE request carries
    except sshkeys.BadKey as exc:
        return [], [f"the VM's SSH keys not recorded: {exc}"]
    return good, refused


def _addresses(product: Product, cfg: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(address, version, slot) from the VM's ``ipconfigN`` (slot N; IPv6 only on net0), each
    checked against the package: its pool, its number of additional IPv4."""
    if product.dhcp:
        return []
    found: list[tuple[str, int, int]] = []
    for key, value in cfg.items():
        n = IPCONFIG.fullmatch(key)
        if n is None:
            continue
        slot = int(n.group(1))
        props = pvecfg.parse(str(value), "ip")
        for name, version in (("ip", 4), ("ip6", 6)):
            addr = props.get(name, "")
            if not addr or addr in ("dhcp", "auto", "manual"):
                continue
            if version == 6 and slot:
                raise Refused(f"{key}: IPv6 on an additional NIC is not something a package "
                              "describes")
            if slot > int(product.extra_ipv4 or 0):
                raise Refused(f"{key}: package {product.name} has "
                              f"{product.extra_ipv4 or 0} additional IPv4")
            found.append((addr.split("/")[0], version, slot))
    for host, version, _slot in found:
        pool_id = product.ip_pool_id if version == 4 else product.ip6_pool_id
        where = addresses.pool_row_for(host)
        if isinstance(where, str):
            raise Refused(where)
        if where[0].id != pool_id:
            raise Refused(f"address {host} is in pool {where[0].name}; package {product.name} "
                          f"takes IPv{version} from {'no pool' if pool_id is None else 'another'}")
    if product.ip_pool_id is not None and not any(v == 4 and s == 0 for _, v, s in found):
        raise Refused(f"the VM's ipconfig0 names no static IPv4, and package {product.name} "
                      "hands out addresses: give the VM its address first (ipconfig0 ip=...)")
    return sorted(found, key=lambda a: (a[1], a[2]))


def _template(m: Mapping, product: Product, cfg: dict[str, Any]) -> Template:
    """The mapping's template, else the one a linked clone's base volume names, else the
    package's (what a reinstall would give)."""
    if m.template:
        tpl = Template.get_or_none(Template.name == m.template)
        if tpl is None:
            raise Refused(f"unknown template {m.template!r}")
        return tpl
    for value in cfg.values():
        base = BASE_VOLUME.search(str(value))
        if base is not None:
            vmid = int(base.group(1))
            here = Template.cluster == m.location  # VMIDs are per cluster in Proxmox
            tpl = Template.get_or_none((Template.vmid == vmid) & here)
            if tpl is None:
                copy = (TemplateReplica.select().join(
                    Template, on=(Template.id == TemplateReplica.template_id))
                    .where((TemplateReplica.vmid == vmid) & here).first())
                tpl = Template.get_by_id(copy.template_id) if copy is not None else None
            if tpl is not None:
                return tpl
    return Template.get_by_id(product.template_id)


def _archives(pve: Proxmox, product: Product, node: str, vmid: int) -> list[dict[str, Any]]:
    if not product.backup_storage:
        return []
    volumes = pve.get(f"nodes/{node}/storage/{product.backup_storage}/content",
                      content="backup", vmid=vmid)
    return [v for v in volumes if int(v.get("vmid") or -1) == vmid]


def _finish(settings: Settings, pve: Proxmox, service: Service, product: Product, m: Mapping,
            *, already: bool = False, notes: list[str] | None = None,
            archives: list[dict[str, Any]] | None = None,
            cfg: dict[str, Any] | None = None) -> Result:
    """What follows the rows, each safe to run again: backups, DNS, the marker."""
    notes = list(notes or [])
    vmid = int(service.vmid or m.vmid)
    if cfg is None:
        found = pve.find_vm(vmid, service.node)
        if found is None:
            raise Refused(f"VM {service.vmid} of service {service.id} is gone from Proxmox")
        cfg = found[1]
        if found[0] != service.node:
            notes.append(f"the VM moved to {found[0]} (recorded: {service.node})")
            service_changes.place_vm(service, found[0])
        if service.product_id != product.id:
            notes.append(f"the service has package {Product.get_by_id(service.product_id).name}"
                         f"; billing changes it with change_package")
    node = str(service.node)
    if archives is None:
        archives = _archives(pve, product, node, vmid)
    listed = 0
    for volume in archives:
        why = backups.record_found(service, volume, str(product.backup_storage), node)
        if why is None:
            listed += 1
        else:
            notes.append(why)
    notes.append(f"{listed} backup(s)")
    try:
        summary, _ = dnssync.publish(service, settings.secret_key_file)
        notes.append(f"DNS: {summary}")
    except dns.DnsError as exc:
        notes.append(f"DNS deferred (the retry job owes it): {exc}")
    except ValueError as exc:
        notes.append(f"DNS not published: {exc}")
    description = str(cfg.get("description", ""))
    if marker(service.id) not in description.split():
        pve.put(f"nodes/{node}/qemu/{vmid}/config",
                description=f"{description.rstrip()}\n{marker(service.id)}".lstrip())
        notes.append("marked")
    return Result(m, True, "; ".join(notes), already=already)


# --- mapping files ----------------------------------------------------------------------------

def read_mapping(path: Path) -> tuple[list[Mapping], list[Result]]:
    """The mappings of a CSV (header naming the columns) or JSON (a list of objects) file, and
    a refusal for each line that is not one; raises ValueError for a file that is not a mapping
    at all (too large, unreadable, unknown columns)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"[":
        items = jsonsafe.loads(raw, max_bytes=MAX_FILE_BYTES, max_depth=2)
        if not isinstance(items, list):
            raise ValueError(f"{path}: JSON mapping must be a list of objects")
        rows = [(f"entry {i + 1}", item) for i, item in enumerate(items)]
    else:
        reader = csv.DictReader(io.StringIO(jsonsafe.decode_text(raw)))
        header = [h.strip() for h in reader.fieldnames or []]
        unknown = sorted(set(header) - set(COLUMNS))
        missing = sorted(set(REQUIRED) - set(header))
        if unknown or missing:
            raise ValueError(f"{path}: CSV header must name {', '.join(REQUIRED)} (and may "
                             f"name {', '.join(COLUMNS[4:])}); "
                             + "; ".join(
                                 ([f"unknown {', '.join(unknown)}"] if unknown else [])
                                 + ([f"missing {', '.join(missing)}"] if missing else [])))
        reader.fieldnames = header
        try:
            rows = [(f"line {reader.line_num}", row) for row in reader]
        except csv.Error as exc:  # a NUL byte, a field past csv's size limit
            raise ValueError(f"{path}: line {reader.line_num}: {exc}") from None
    if len(rows) > MAX_ENTRIES:
        raise ValueError(f"{path}: {len(rows)} entries, more than {MAX_ENTRIES}")
    good, bad = [], []
    for position, (where, row) in enumerate(rows):
        try:
            good.append(_mapping(where, position, row))
        except ValueError as exc:
            bad.append(Result(Mapping(0, 0, 0, "", where=where, position=position), False,
                              str(exc)))
    return _without_twice(good, bad)


def _mapping(where: str, position: int, row: object) -> Mapping:
    if not isinstance(row, dict):
        raise ValueError("not an object")
    extra = sorted(str(k) for k in row if k not in COLUMNS)
    if extra or None in row:
        raise ValueError(f"unknown field(s) {', '.join(extra) or 'beyond the header'}")
    values = {k: (str(v).strip() if v is not None else "") for k, v in row.items()}
    ints = {}
    for name in ("vmid", "service_id", "client_id"):
        text = values.get(name, "")
        top = {"vmid": MAX_VMID, "client_id": MAX_CLIENT_ID}.get(name, MAX_SERVICE_ID)
        if not text.isdigit() or not 0 < int(text) <= top:
            raise ValueError(f"{name}: {text[:40]!r} is not a valid id")
        ints[name] = int(text)
    strings = {k: values[k][:254] or None for k in ("product", "node", "hostname", "email",
                                                     "template") if k in values}
    if not strings.get("product"):
        raise ValueError("product: missing")
    return Mapping(**ints, **strings, where=where, position=position)  # type: ignore[arg-type]


def _without_twice(good: list[Mapping], bad: list[Result]) -> tuple[list[Mapping], list[Result]]:
    """A VMID or service id named on several lines is ambiguous: each of those lines is
    refused, naming the others."""
    seen: dict[str, dict[int, list[str]]] = {"VMID": {}, "service id": {}}
    for m in good:
        seen["VMID"].setdefault(m.vmid, []).append(m.where)
        seen["service id"].setdefault(m.service_id, []).append(m.where)
    keep = []
    for m in good:
        for what, key in (("VMID", m.vmid), ("service id", m.service_id)):
            places = seen[what][key]
            if len(places) > 1:
                bad.append(Result(m, False, f"{what} {key} is named {len(places)} times "
                                            f"({', '.join(places[:5])}): none of them adopted"))
                break
        else:
            keep.append(m)
    return keep, bad


def adopt_file(settings: Settings, pve: Proxmox, path: Path,
               cluster: str | None = None) -> list[Result]:
    """Every mapping of the file, in order (refused lines first): one cluster listing gives each
    VM's node, so N lines cost O(N) Proxmox calls."""
    good, bad = read_mapping(path)
    nodes = {int(r["vmid"]): str(r["node"]) for r in pve.get("cluster/resources", type="vm")
             if r.get("vmid") is not None}
    results = list(bad)
    for m in good:
        results.append(adopt(settings, pve, m, nodes.get(m.vmid), listed=m.vmid in nodes,
                             cluster=cluster))
    return sorted(results, key=lambda r: r.mapping.position)


def summary(results: list[Result]) -> str:
    adopted = sum(1 for r in results if r.ok and not r.already)
    again = sum(1 for r in results if r.already)
    refused = sum(1 for r in results if not r.ok)
    return f"{adopted} adopted, {again} already adopted, {refused} refused"
