"""VMSetCloudinit: user, password, network and hostname, then the drive is regenerated
(changes stay pending in PVE until ``PUT …/cloudinit``; the drive spec itself is never re-sent)."""

from __future__ import annotations

import hashlib
import ipaddress
import json

from pvekvm.models import Service
from pvekvm.secrets import generate_password
from steps.context import StepContext
from steps.machine import Done, StepResult


def ipconfig(ctx: StepContext) -> str:
    if ctx.product.dhcp:
        return "ip=dhcp"
    parts = []
    for version, key, gw_key in ((4, "ip", "gw"), (6, "ip6", "gw6")):
        addr, pool = ctx.address(version), ctx.pool(version)
        if addr and pool:
            prefix = ipaddress.ip_network(pool.network, strict=False).prefixlen
            parts += [f"{key}={addr.address}/{prefix}", f"{gw_key}={pool.gateway}"]
    return ",".join(parts) if parts else "ip=dhcp"


def set_cloudinit(ctx: StepContext, *, new_password: bool = False) -> StepResult:
    """Writes the cloud-init settings; a password is generated once (or anew for a reset) and
    kept encrypted in the database in the same transaction as the state change."""
    password = ctx.password
    if password is None or new_password:
        password = generate_password()
        ctx.set_password(password)
    user = ctx.template.os_user  # the OS image decides its login (reinstall may change it)
    if ctx.service.username != user:
        ctx.service.username = user
        Service.update(username=user).where(Service.id == ctx.service.id).execute()
    pool = ctx.pool(4) or ctx.pool(6)
    settings = {"ciuser": user, "cipassword": password, "ipconfig0": ipconfig(ctx),
                "name": ctx.service.hostname}
    if pool and pool.nameservers:
        settings["nameserver"] = pool.nameservers
    if ctx.product.dns_zone:
        settings["searchdomain"] = ctx.product.dns_zone
    # PVE stores cipassword as a salted hash, so the config cannot tell whether these settings
    # are in place: a fingerprint in the VM's description does (over the encrypted password,
    # never the password itself).
    fingerprint = _fingerprint(settings, bytes(ctx.service.password_enc))
    description = str(ctx.config().get("description", ""))
    if f"ci={fingerprint}" in description.split():
        return Done("no change", skipped=True)
    kept = " ".join(w for w in description.split() if not w.startswith("ci="))
    ctx.pve.put(f"{ctx.vm_path}/config", **settings, description=f"{kept} ci={fingerprint}")
    ctx.pve.put(f"{ctx.vm_path}/cloudinit")
    return Done(f"user {user}, {settings['ipconfig0']}")


def _fingerprint(settings: dict[str, str], password_enc: bytes) -> str:
    public = {k: v for k, v in settings.items() if k != "cipassword"}
    blob = json.dumps(public, sort_keys=True).encode() + password_enc
    return hashlib.sha256(blob).hexdigest()[:16]
