"""VMSetCloudinit: user, password, network and hostname, then the drive is regenerated
(changes stay pending in PVE until ``PUT …/cloudinit``; the drive spec itself is never re-sent)."""

from __future__ import annotations

import hashlib
import ipaddress
import json

from pvekvm import addresses, service_changes
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.secrets import generate_password
from steps.context import StepContext
from steps.machine import Done, StepResult


def ipconfig(ctx: StepContext) -> str:
    """``ipconfig0``: the primary IPv4 and the IPv6 address, or for a routed prefix its first
    host address with the prefix pool's gateway (``ip6=2001:db8:100:5::1/64,gw6=fe80::1``)."""
    if ctx.product.dhcp:
        return "ip=dhcp"
    parts = []
    for version, key, gw_key in ((4, "ip", "gw"), (6, "ip6", "gw6")):
        addr, pool = ctx.address(version), ctx.pool(version)
        if addr and pool:
            prefix = addr.prefixlen or ipaddress.ip_network(pool.network, strict=False).prefixlen
            parts += [f"{key}={addresses.host_address(addr)}/{prefix}", f"{gw_key}={pool.gateway}"]
    return ",".join(parts) if parts else "ip=dhcp"


def network_settings(ctx: StepContext) -> tuple[dict[str, str], list[str]]:
    """The ``ipconfigN`` keys the VM should have, and those it has but should not. PVE's
    cloud-init takes one address per interface (``ipconfigN`` configures NIC ``netN``), so
    extra IPv4 N is ``ipconfigN = ip=<address>/<pool prefix>`` on its own NIC, without a
    gateway: the default route stays on net0."""
    want = {"ipconfig0": ipconfig(ctx)}
    pool = ctx.pool(4)
    if pool is not None and not ctx.product.dhcp:
        bits = ipaddress.ip_network(pool.network, strict=False).prefixlen
        for row in ctx.extra_ipv4():
            want[f"ipconfig{row.slot}"] = f"ip={row.address}/{bits}"
    stale = [k for k in ctx.config() if k.startswith("ipconfig") and k[8:].isdigit()
             and k not in want and 1 <= int(k[8:]) <= MAX_EXTRA_IPV4]
    return want, sorted(stale)


def set_cloudinit(ctx: StepContext, *, new_password: bool = False) -> StepResult:
    """Writes the cloud-init settings; a password is generated once (or anew for a reset) and
    kept encrypted in the database in the same transaction as the state change."""
    password = ctx.password
    if password is None or new_password:
        password = generate_password()
        ctx.set_password(password)
    user = ctx.template.os_user  # the OS image decides its login (reinstall may change it)
    service_changes.set_username(ctx.service, user)
    pool = ctx.pool(4) or ctx.pool(6)
    network, stale = network_settings(ctx)
    settings = {"ciuser": user, "cipassword": password, **network, "name": ctx.service.hostname}
    if pool and pool.nameservers:
        settings["nameserver"] = pool.nameservers
    if ctx.product.dns_zone:
        settings["searchdomain"] = ctx.product.dns_zone
    # PVE stores cipassword as a salted hash, so the config cannot tell whether these settings
    # are in place: a fingerprint in the VM's description does (over the encrypted password,
    # never the password itself).
    fingerprint = _fingerprint(settings, bytes(ctx.service.password_enc or b""))
    description = str(ctx.config().get("description", ""))
    if f"ci={fingerprint}" in description.split():
        return Done("no change", skipped=True)
    kept = " ".join(w for w in description.split() if not w.startswith("ci="))
    extra = {"delete": ",".join(stale)} if stale else {}
    ctx.pve.put(f"{ctx.vm_path}/config", **settings, **extra,
                description=f"{kept} ci={fingerprint}")
    ctx.pve.put(f"{ctx.vm_path}/cloudinit")
    return Done(f"user {user}, {settings['ipconfig0']}")


def _fingerprint(settings: dict[str, str], password_enc: bytes) -> str:
    public = {k: v for k, v in settings.items() if k != "cipassword"}
    blob = json.dumps(public, sort_keys=True).encode() + password_enc
    return hashlib.sha256(blob).hexdigest()[:16]
