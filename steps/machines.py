"""The operations' state machines, as data. Steps shared between machines are the same
functions: deploy, change package, reinstall and restore all configure the VM with the same
hardware, network, firewall and cloud-init steps."""

from __future__ import annotations

from steps import allocation, cloudinit, dns, firewall, hardware, power, provision
from steps.machine import Machine
from steps.machine import Transition as T
from steps.notify import mailer, verify_and_mail

DEPLOY = Machine("deploy", "Deploy", (
    T("new", "ip", allocation.allocate_ips, "ip_allocated", "Allocate IP"),
    T("ip_allocated", "dns", dns.set_dns_records, "dns_set", "Set DNS records"),
    T("dns_set", "clone", allocation.reserve_vmid, "vmid_reserved", "Reserve VMID"),
    T("vmid_reserved", "mail", mailer("welcome"), "welcome_sent", "Welcome email"),
    T("welcome_sent", "clone", provision.clone_vm, "clone", "Clone from template"),
    T("clone", "migrate", provision.migrate_to_target, "migrated", "Migrate to target node"),
    T("migrated", "config", hardware.set_cpu_ram, "set_cpu_ram", "Set CPU & RAM"),
    T("set_cpu_ram", "disks", hardware.resize_system_disk, "set_system_disk_size",
      "Resize system disk"),
    T("set_system_disk_size", "disks", hardware.set_system_disk_io, "set_system_disk_bandwidth",
      "Set system disk I/O"),
    T("set_system_disk_bandwidth", "disks", hardware.create_additional_disk,
      "set_created_additional_disk", "Create additional disk"),
    T("set_created_additional_disk", "disks", hardware.resize_additional_disk,
      "set_additional_disk_size", "Resize additional disk"),
    T("set_additional_disk_size", "disks", hardware.set_additional_disk_io,
      "set_additional_disk_bandwidth", "Set additional disk I/O"),
    T("set_additional_disk_bandwidth", "network", hardware.set_network, "set_network",
      "Configure network"),
    T("set_network", "firewall", firewall.set_firewall, "set_firewall", "Configure firewall"),
    T("set_firewall", "cloudinit", cloudinit.set_cloudinit, "set_cloudinit",
      "Configure cloud-init"),
    T("set_cloudinit", "power", power.start_vm, "starting", "Start VM"),
    T("starting", "mail", verify_and_mail("vm_ready"), "ready", "Verify running + Email"),
), busy_status="deploying", done_status="ready")

MACHINES: dict[str, Machine] = {m.kind: m for m in (DEPLOY,)}


def clone_states() -> list[str]:
    """States whose step dispatches a clone (for the per-node clone limit)."""
    return [t.state for m in MACHINES.values() for t in m.transitions
            if t.step is provision.clone_vm]
