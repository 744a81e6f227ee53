"""VMSetCloudinit: user, password, SSH keys, network and hostname, then the drive is regenerated
(changes stay pending in PVE until ``PUT …/cloudinit``; the drive spec itself is never re-sent).

A Windows template (``os_type = "windows"``, cloudbase-init) gets ``citype = configdrive2`` and
its Windows ``ostype`` first, in a call of its own: qemu-server stores ``cipassword`` as a salted
hash unless the VM's *saved* ``ostype`` is a Windows one (API2/Qemu.pm, update_vm_api), and
cloudbase-init needs the password itself (``admin_pass`` in the config drive's meta_data.json).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from pvekvm import addresses, service_changes, sshkeys
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.secrets import generate_password
from steps.context import StepContext
from steps.machine import Done, StepFailed, StepResult


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
    config = ctx.config()
    settings = {"ciuser": user, "cipassword": password, **network, "name": ctx.service.hostname}
    if pool and pool.nameservers:
        settings["nameserver"] = pool.nameservers
    if ctx.product.dns_zone:
        settings["searchdomain"] = ctx.product.dns_zone
    keys = sshkeys.lines_of(ctx.ssh_keys)
    if keys:
        settings["sshkeys"] = sshkeys.pve_sshkeys(keys)
    elif "sshkeys" in config:
        stale.append("sshkeys")  # the client removed its keys (or the template had some)
    if ctx.product.cicustom:
        settings["cicustom"] = ctx.product.cicustom
    if ctx.template.os_type == "windows":
        settings["citype"] = "configdrive2"
    ostype = ctx.template.ostype
    if ostype and config.get("ostype") != ostype:
        ctx.pve.put(f"{ctx.vm_path}/config", ostype=ostype)  # before cipassword (see above)
    if ctx.template.os_type == "windows":
        saved = ctx.pve.get(f"{ctx.vm_path}/config", current=1).get("ostype")  # not pending
        if not windows_version(saved):
            raise StepFailed(f"the VM's saved ostype is {saved!r}, not a Windows one (a "
                             "pending change of a running VM?): PVE would hash the password "
                             "and cloudbase-init could not set it")
    # PVE stores cipassword as a salted hash, so the config cannot tell whether these settings
    # are in place: a fingerprint in the VM's description does (over the encrypted password,
    # never the password itself).
    fingerprint = _fingerprint({**settings, **({"ostype": ostype} if ostype else {})},
                               bytes(ctx.service.password_enc or b""))
    description = str(config.get("description", ""))
    if f"ci={fingerprint}" in description.split():
        return Done("no change", skipped=True)
    kept = " ".join(w for w in description.split() if not w.startswith("ci="))
    extra = {"delete": ",".join(stale)} if stale else {}
    ctx.pve.put(f"{ctx.vm_path}/config", **settings, **extra,
                description=f"{kept} ci={fingerprint}")
    ctx.pve.put(f"{ctx.vm_path}/cloudinit")
    return Done(f"user {user}, {settings['ipconfig0']}"
                + (f", {len(keys)} SSH key(s)" if keys else ""))


def windows_version(ostype: object) -> int:
    """qemu-server's PVE::QemuServer::Helpers::windows_version: 0 for a non-Windows ostype."""
    text = str(ostype or "")
    if text in ("wxp", "w2k3", "w2k"):
        return 5
    if text in ("w2k8", "wvista"):
        return 6
    return int(text[3:]) if text.startswith("win") and text[3:].isdigit() else 0


def _fingerprint(settings: dict[str, str], password_enc: bytes) -> str:
    public = {k: v for k, v in settings.items() if k != "cipassword"}
    blob = json.dumps(public, sort_keys=True).encode() + password_enc
    return hashlib.sha256(blob).hexdigest()[:16]
