"""The operations' state machines, as data. Steps shared between machines are the same
functions: deploy, change package, reinstall and restore all configure the VM with the same
hardware, network, firewall and cloud-init steps. State names follow the seed manual (deploy's
``clone -> migrated``, change package's ``cp_*``)."""

from __future__ import annotations

from steps import (
    allocation,
    backups,
    cloudinit,
    dns,
    firewall,
    hardware,
    lifecycle,
    package,
    power,
    provision,
)
from steps.machine import Machine
from steps.machine import Transition as T
from steps.notify import mailer, verify_and_mail


def configure(prefix: str, first: str, last: str, *, with_cpu: bool = True,
              with_cloudinit: bool = True) -> tuple[T, ...]:
    """The shared tail: CPU/RAM, disks, network, firewall (and cloud-init), from ``first`` to
    ``last``; states are ``<prefix>_<what>``."""
    steps = [("config", hardware.set_cpu_ram, "cpu_ram", "Set CPU & RAM")] if with_cpu else []
    steps += [
        ("disks", hardware.resize_system_disk, "system_disk_size", "Resize system disk"),
        ("disks", hardware.set_system_disk_io, "system_disk_bandwidth", "Set system disk I/O"),
        ("disks", hardware.create_additional_disk, "additional_disk", "Create additional disk"),
        ("disks", hardware.resize_additional_disk, "additional_disk_size",
         "Resize additional disk"),
        ("disks", hardware.set_additional_disk_io, "additional_disk_bandwidth",
         "Set additional disk I/O"),
        ("network", hardware.set_network, "network", "Configure network"),
        ("firewall", firewall.set_firewall, "firewall", "Configure firewall"),
    ]
    if with_cloudinit:
        steps.append(("cloudinit", cloudinit.set_cloudinit, "cloudinit", "Configure cloud-init"))
    states = [first] + [f"{prefix}_{s[2]}" for s in steps[1:]] + [last]
    return tuple(T(states[i], pool, fn, states[i + 1], label)
                 for i, (pool, fn, _, label) in enumerate(steps))


def start_and_mail(prefix: str, template: str) -> tuple[T, ...]:
    """Start the VM, then 'Verify running + Email' with ``template``: the end of every
    operation that hands the client a (re)built VM."""
    return (T(f"{prefix}_start", "power", power.start_vm, f"{prefix}_verify", "Start VM"),
            T(f"{prefix}_verify", "mail", verify_and_mail(template), "ready",
              "Verify running + Email"))


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

CHANGE_PACKAGE = Machine("change_package", "ChangePackage", (
    T("change_package", "ip", package.update_ip_dns_firewall, "cp_stop",
      "Update IP + DNS + Firewall"),
    T("cp_stop", "power", power.stop_vm, "cp_relocate", "Stop VM"),
    T("cp_relocate", "migrate", provision.migrate_to_target, "cp_cpu_ram",
      "Migrate to target node"),
    *configure("cp", "cp_cpu_ram", "cp_start", with_cloudinit=False),
    T("cp_start", "power", power.start_vm, "cp_verify", "Start VM"),
    T("cp_verify", "power", power.verify_running, "ready", "Verify VM"),
), busy_status="changing", done_status="ready")

REINSTALL = Machine("reinstall", "Reinstall", (
    T("reinstall", "snapshot", backups.delete_all_snapshots, "rs_remove", "Delete snapshots"),
    T("rs_remove", "clone", provision.delete_vm, "rs_clone", "Remove VM"),
    T("rs_clone", "clone", provision.clone_vm, "rs_migrate", "Clone from template"),
    T("rs_migrate", "migrate", provision.migrate_to_target, "rs_cpu_ram",
      "Migrate to target node"),
    T("rs_cpu_ram", "config", hardware.set_cpu_ram, "rs_dns_delete", "Set CPU & RAM"),
    T("rs_dns_delete", "dns", dns.delete_dns_records, "rs_dns_set", "Delete DNS records"),
    T("rs_dns_set", "dns", dns.set_dns_records, "rs_system_disk_size", "Set DNS records"),
    *configure("rs", "rs_system_disk_size", "rs_password", with_cpu=False,
               with_cloudinit=False),
    T("rs_password", "cloudinit", lifecycle.reset_password, "rs_start", "Configure cloud-init"),
    *start_and_mail("rs", "reinstalled"),
), busy_status="reinstalling", done_status="ready")

RESTORE = Machine("restore", "Restore", (
    T("restore", "power", power.stop_vm, "rt_restore", "Stop VM"),
    T("rt_restore", "backup", backups.restore_backup, "rt_cpu_ram", "Restore backup"),
    *configure("rt", "rt_cpu_ram", "rt_start", with_cloudinit=False),
    *start_and_mail("rt", "backup_restored"),
), busy_status="restoring", done_status="ready")

RESET_PASSWORD = Machine("reset_password", "ResetPassword", (
    T("reset_password", "power", power.stop_vm, "rp_cloudinit", "Stop VM"),
    T("rp_cloudinit", "cloudinit", lifecycle.reset_password, "rp_start", "Configure cloud-init"),
    *start_and_mail("rp", "password_reset"),
), busy_status="resetting", done_status="ready")

TERMINATE = Machine("terminate", "Terminate", (
    T("terminate", "power", power.stop_vm, "tm_backups", "Stop VM"),
    T("tm_backups", "backup", backups.delete_all_backups, "tm_remove", "Delete backups"),
    T("tm_remove", "clone", provision.delete_vm, "tm_dns", "Remove VM"),
    T("tm_dns", "dns", dns.delete_dns_records, "tm_release", "Delete DNS records"),
    T("tm_release", "ip", lifecycle.release_addresses, "terminated", "Release IPs"),
), busy_status="terminating", done_status="terminated")

SUSPEND = Machine("suspend", "Suspend", (
    T("suspend", "power", power.stop_vm, "suspended", "Stop VM"),
), busy_status="suspending", done_status="suspended")

UNSUSPEND = Machine("unsuspend", "Unsuspend", (
    T("unsuspend", "power", power.start_vm, "us_verify", "Start VM"),
    T("us_verify", "power", power.verify_running, "ready", "Verify VM"),
), busy_status="unsuspending", done_status="ready")



def _one(kind: str, title: str, pool: str, step, label: str) -> Machine:
    """A one-step operation that leaves the service's status as it was."""
    return Machine(kind, title, (T(kind, pool, step, "done", label),))


MACHINES: dict[str, Machine] = {m.kind: m for m in (
    DEPLOY, CHANGE_PACKAGE, REINSTALL, RESTORE, RESET_PASSWORD, TERMINATE, SUSPEND, UNSUSPEND,
    _one("power", "Power", "power", lifecycle.power_action, "Power action"),
    _one("snapshot_create", "Snapshot", "snapshot", backups.create_snapshot, "Create snapshot"),
    _one("snapshot_delete", "Snapshot", "snapshot", backups.delete_snapshot, "Delete snapshot"),
    _one("snapshot_rollback", "Snapshot", "snapshot", backups.rollback_snapshot,
         "Roll back to snapshot"),
    _one("backup_create", "Backup", "backup", backups.create_backup, "Create backup"),
    _one("backup_delete", "Backup", "backup", backups.delete_backup, "Delete backup"),
    _one("iso_mount", "ISO", "iso", lifecycle.mount_iso, "Mount ISO"),
    _one("iso_unmount", "ISO", "iso", lifecycle.unmount_iso, "Unmount ISO"),
)}


def clone_states() -> list[str]:
    """States whose step dispatches a clone (for the per-node clone limit)."""
    return [t.state for m in MACHINES.values() for t in m.transitions
            if t.step is provision.clone_vm]
