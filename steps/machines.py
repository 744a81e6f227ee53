"""Every operation's state machine, as data: the map of what the engine does.

Read a line as: *at* ``state``, the ``pool`` workers *run* a step, *then* the operation is at the
next state; ``retry`` (when present) overrides how that step's faults are retried (the rest of the
policy is ``[engine]`` in the settings: steps/machine.py ``RetryPolicy``, ``backoff``).

State names: deploy keeps the seed manual's names, which say what is already in place
(``ip_allocated``, ``migrated``, ``set_firewall``); every other machine names the step about to run,
after a short prefix of its own (``cp_stop``: change package is about to stop the VM). Each state
is written out literally, so ``grep -n cp_stop`` finds its line. Steps shared between machines are
the same functions: deploy, change package, reinstall and restore configure the VM with the same
hardware, network, firewall and cloud-init steps (``configure``). A step with ``skip_if`` (the
additional-disk steps: the package has none) is passed by in the previous step's commit, recorded
as skipped with its reason, without a message of its own.
"""

from __future__ import annotations

from steps import (
    allocation,
    backups,
    cloudinit,
    dns,
    firewall,
    hardware,
    lifecycle,
    migrate,
    overage,
    package,
    power,
    provision,
    rdns,
    slots,
)
from steps.machine import Machine, RetryPolicy, SkipIf, Step, T, Transition
from steps.notify import mailer, verify_and_mail

SLOW_TO_BOOT = RetryPolicy(first_s=5.0)  # a VM that was just started may need a few seconds
# waiting for a clone slot: look again soon (the oldest waiter takes a slot PVE just freed)
CLONE_TURN = RetryPolicy(wait_s=0.5, wait_max_s=1.0)

NO_EXTRA_DISK = hardware.no_additional_disk
CONFIGURE_STEPS: tuple[tuple[str, Step, str, SkipIf | None], ...] = (
    # (pool, step, label, skip_if): the shared tail after the VM exists
    ("config", hardware.set_cpu_ram, "Set CPU & RAM", None),
    ("disks", hardware.resize_system_disk, "Resize system disk", None),
    ("disks", hardware.set_system_disk_io, "Set system disk I/O", None),
    ("disks", hardware.create_additional_disk, "Create additional disk", NO_EXTRA_DISK),
    ("disks", hardware.resize_additional_disk, "Resize additional disk", NO_EXTRA_DISK),
    ("disks", hardware.set_additional_disk_io, "Set additional disk I/O", NO_EXTRA_DISK),
    ("network", hardware.set_network, "Configure network", None),
    ("firewall", firewall.set_firewall, "Configure firewall", None),
    ("cloudinit", cloudinit.set_cloudinit, "Configure cloud-init", None),
)


def configure(*states: str, then: str, skip: tuple[str, ...] = ()) -> tuple[Transition, ...]:
    """The shared tail (CPU/RAM, disks, network, firewall, cloud-init) through the ``states``
    given, one per step not named in ``skip`` (labels), ending at ``then``."""
    steps = [s for s in CONFIGURE_STEPS if s[2] not in skip]
    if len(steps) != len(states):
        raise ValueError(f"configure: {len(steps)} steps but {len(states)} states")
    chain = (*states, then)
    return tuple(T(chain[i], pool=pool, run=run, then=chain[i + 1], label=label,
                   skip_if=skip_if) for i, (pool, run, label, skip_if) in enumerate(steps))


def start_and_mail(start: str, verify: str, template: str) -> tuple[Transition, ...]:
    """Start the VM, then 'Verify running + Email' with ``template``: the end of every
    operation that hands the client a (re)built VM; ends at ``ready``."""
    return (T(start, pool="power", run=power.start_vm, then=verify, label="Start VM"),
            T(verify, pool="mail", run=verify_and_mail(template), then="ready",
              label="Verify running + Email", retry=SLOW_TO_BOOT))


DEPLOY = Machine("deploy", "Deploy", (
    T("new", pool="ip", run=allocation.allocate_ips, then="ip_allocated", label="Allocate IP"),
    T("ip_allocated", pool="dns", run=dns.set_dns_records, then="dns_set",
      label="Set DNS records"),
    T("dns_set", pool="clone", run=allocation.reserve_vmid, then="vmid_reserved",
      label="Reserve VMID"),
    T("vmid_reserved", pool="mail", run=mailer("welcome"), then="welcome_sent",
      label="Welcome email"),
    T("welcome_sent", pool="clone", run=provision.clone_vm, then="clone",
      label="Clone from template", retry=CLONE_TURN),
    T("clone", pool="migrate", run=provision.migrate_to_target, then="migrated",
      label="Migrate to target node"),
    *configure("migrated", "set_cpu_ram", "set_system_disk_size", "set_system_disk_bandwidth",
               "set_created_additional_disk", "set_additional_disk_size",
               "set_additional_disk_bandwidth", "set_network", "set_firewall",
               then="set_cloudinit"),
    T("set_cloudinit", pool="power", run=power.start_vm, then="starting", label="Start VM"),
    T("starting", pool="mail", run=verify_and_mail("vm_ready"), then="ready",
      label="Verify running + Email", retry=SLOW_TO_BOOT),
), busy_status="deploying", done_status="ready", failed_status="failed", admission=True)

CHANGE_PACKAGE = Machine("change_package", "ChangePackage", (
    T("change_package", pool="ip", run=package.update_ip_dns_firewall, then="cp_stop",
      label="Update IP + DNS + Firewall"),
    T("cp_stop", pool="power", run=power.stop_vm, then="cp_relocate", label="Stop VM"),
    T("cp_relocate", pool="migrate", run=provision.migrate_to_target, then="cp_cpu_ram",
      label="Migrate to target node"),
    *configure("cp_cpu_ram", "cp_system_disk_size", "cp_system_disk_bandwidth",
               "cp_additional_disk", "cp_additional_disk_size", "cp_additional_disk_bandwidth",
               "cp_network", "cp_firewall", then="cp_start", skip=("Configure cloud-init",)),
    T("cp_start", pool="power", run=power.start_vm, then="cp_verify", label="Start VM"),
    T("cp_verify", pool="power", run=power.verify_running, then="ready", label="Verify VM",
      retry=SLOW_TO_BOOT),
), busy_status="changing", done_status="ready", runs_while_suspended=True)

REINSTALL = Machine("reinstall", "Reinstall", (
    T("reinstall", pool="snapshot", run=backups.delete_all_snapshots, then="rs_remove",
      label="Delete snapshots"),
    T("rs_remove", pool="clone", run=provision.delete_vm, then="rs_clone", label="Remove VM"),
    T("rs_clone", pool="clone", run=provision.clone_vm, then="rs_migrate",
      label="Clone from template", retry=CLONE_TURN),
    T("rs_migrate", pool="migrate", run=provision.migrate_to_target, then="rs_cpu_ram",
      label="Migrate to target node"),
    T("rs_cpu_ram", pool="config", run=hardware.set_cpu_ram, then="rs_dns_delete",
      label="Set CPU & RAM"),
    T("rs_dns_delete", pool="dns", run=dns.delete_dns_records, then="rs_dns_set",
      label="Delete DNS records"),
    T("rs_dns_set", pool="dns", run=dns.set_dns_records, then="rs_system_disk_size",
      label="Set DNS records"),
    *configure("rs_system_disk_size", "rs_system_disk_bandwidth", "rs_additional_disk",
               "rs_additional_disk_size", "rs_additional_disk_bandwidth", "rs_network",
               "rs_firewall", then="rs_password",
               skip=("Set CPU & RAM", "Configure cloud-init")),
    T("rs_password", pool="cloudinit", run=lifecycle.reset_password, then="rs_start",
      label="Configure cloud-init"),
    *start_and_mail("rs_start", "rs_verify", "reinstalled"),
), busy_status="reinstalling", done_status="ready")

RESTORE = Machine("restore", "Restore", (
    T("restore", pool="power", run=power.stop_vm, then="rt_restore", label="Stop VM"),
    T("rt_restore", pool="backup", run=backups.restore_backup, then="rt_cpu_ram",
      label="Restore backup"),
    *configure("rt_cpu_ram", "rt_system_disk_size", "rt_system_disk_bandwidth",
               "rt_additional_disk", "rt_additional_disk_size", "rt_additional_disk_bandwidth",
               "rt_network", "rt_firewall", then="rt_start", skip=("Configure cloud-init",)),
    *start_and_mail("rt_start", "rt_verify", "backup_restored"),
), busy_status="restoring", done_status="ready",
   way_out=("backup_restore", "reinstall"))  # a failed restore: another backup, or a fresh OS

RESET_PASSWORD = Machine("reset_password", "ResetPassword", (
    T("reset_password", pool="power", run=power.stop_vm, then="rp_cloudinit", label="Stop VM"),
    T("rp_cloudinit", pool="cloudinit", run=lifecycle.reset_password, then="rp_start",
      label="Configure cloud-init"),
    *start_and_mail("rp_start", "rp_verify", "password_reset"),
), busy_status="resetting", done_status="ready")

TERMINATE = Machine("terminate", "Terminate", (
    T("terminate", pool="power", run=power.stop_vm, then="tm_backups", label="Stop VM"),
    T("tm_backups", pool="backup", run=backups.delete_all_backups, then="tm_remove",
      label="Delete backups"),
    T("tm_remove", pool="clone", run=provision.delete_vm, then="tm_dns", label="Remove VM"),
    T("tm_dns", pool="dns", run=dns.delete_dns_records, then="tm_release",
      label="Delete DNS records"),
    T("tm_release", pool="ip", run=lifecycle.release_addresses, then="tm_forget",
      label="Release IPs"),
    T("tm_forget", pool="ip", run=lifecycle.forget_client_secrets, then="terminated",
      label="Erase client secrets"),
), busy_status="terminating", done_status="terminated", runs_while_suspended=True,
   suspended_after=False)

SUSPEND = Machine("suspend", "Suspend", (
    T("suspend", pool="power", run=power.stop_vm, then="suspended", label="Stop VM"),
), busy_status="suspending", done_status="suspended", runs_while_suspended=True,
   suspended_after=True)

UNSUSPEND = Machine("unsuspend", "Unsuspend", (
    T("unsuspend", pool="power", run=power.start_vm, then="us_verify", label="Start VM"),
    T("us_verify", pool="power", run=power.verify_running, then="ready", label="Verify VM",
      retry=SLOW_TO_BOOT),
), busy_status="unsuspending", done_status="ready", runs_while_suspended=True,
   suspended_after=False)


# Move one VM to another node (an operator's or billing's `migrate`, or a node drain): the
# target chosen once (pvekvm/placement.py), a local ISO detached (PVE cannot migrate it), then
# live or offline as the VM and its disks allow (steps/migrate.py); its NIC (MAC, VLAN, rate)
# and firewall checked on the new node, shared-storage backups reached through it.
MIGRATE = Machine("migrate", "Migrate", (
    T("migrate", pool="migrate", run=migrate.choose_target, then="mg_iso",
      label="Choose target node", retry=CLONE_TURN),
    T("mg_iso", pool="iso", run=migrate.detach_local_iso, then="mg_move",
      label="Detach local ISO"),
    T("mg_move", pool="migrate", run=migrate.move, then="mg_network", label="Migrate VM",
      retry=CLONE_TURN),
    T("mg_network", pool="network", run=hardware.set_network, then="mg_firewall",
      label="Configure network"),
    T("mg_firewall", pool="firewall", run=firewall.set_firewall, then="mg_backups",
      label="Configure firewall"),
    T("mg_backups", pool="backup", run=migrate.follow_backups, then="done",
      label="Backups follow"),
), runs_while_suspended=True, completed_event="service.migrated")


def one_step(kind: str, title: str, *, pool: str, run: Step, label: str,
             completed_event: str | None = None) -> Machine:
    """A day-2 operation of one step: its only state is its kind, and it ends at ``done``
    leaving the service's status as it was."""
    return Machine(kind, title, (T(kind, pool=pool, run=run, then="done", label=label),),
                   completed_event=completed_event)


POWER = one_step("power", "Power", pool="power", run=lifecycle.power_action,
                 label="Power action")
SNAPSHOT_CREATE = one_step("snapshot_create", "Snapshot", pool="snapshot",
                           run=backups.create_snapshot, label="Create snapshot")
SNAPSHOT_DELETE = one_step("snapshot_delete", "Snapshot", pool="snapshot",
                           run=backups.delete_snapshot, label="Delete snapshot")
SNAPSHOT_ROLLBACK = one_step("snapshot_rollback", "Snapshot", pool="snapshot",
                             run=backups.rollback_snapshot, label="Roll back to snapshot")
BACKUP_CREATE = one_step("backup_create", "Backup", pool="backup", run=backups.create_backup,
                         label="Create backup")
BACKUP_DELETE = one_step("backup_delete", "Backup", pool="backup", run=backups.delete_backup,
                         label="Delete backup")
ISO_MOUNT = one_step("iso_mount", "ISO", pool="iso", run=lifecycle.mount_iso, label="Mount ISO")
ISO_UNMOUNT = one_step("iso_unmount", "ISO", pool="iso", run=lifecycle.unmount_iso,
                       label="Unmount ISO")
RDNS_SET = one_step("rdns_set", "ReverseDNS", pool="dns", run=rdns.set_client_ptr,
                    label="Set reverse DNS")
RDNS_RESET = one_step("rdns_reset", "ReverseDNS", pool="dns", run=rdns.reset_client_ptr,
                      label="Reset reverse DNS")
# Traffic over quota (the scheduler's overage pass starts them; never on a suspended service):
# only net0's rate changes (pvekvm/overage.py has the rule, steps/overage.py the steps)
THROTTLE = one_step("throttle", "Throttle", pool="network", run=overage.throttle,
                    label="Set overage rate", completed_event="service.throttled")
UNTHROTTLE = one_step("unthrottle", "Unthrottle", pool="network", run=overage.unthrottle,
                      label="Restore package rate", completed_event="service.unthrottled")

MACHINES: dict[str, Machine] = {m.kind: m for m in (
    DEPLOY, CHANGE_PACKAGE, REINSTALL, RESTORE, RESET_PASSWORD, TERMINATE, SUSPEND, UNSUSPEND,
    POWER, SNAPSHOT_CREATE, SNAPSHOT_DELETE, SNAPSHOT_ROLLBACK, BACKUP_CREATE, BACKUP_DELETE,
    ISO_MOUNT, ISO_UNMOUNT, RDNS_SET, RDNS_RESET, THROTTLE, UNTHROTTLE, MIGRATE,
)}

CLONE_STATES: tuple[str, ...] = tuple(
    t.state for m in MACHINES.values() for t in m.transitions if t.run is provision.clone_vm)
"""States whose step dispatches a clone (the per-node clone limit counts operations there)."""
BACKUP_STATES: tuple[str, ...] = tuple(
    t.state for m in MACHINES.values() for t in m.transitions if t.run is backups.create_backup)
"""States whose step dispatches a vzdump (one backup job per node: steps/slots.py)."""
MIGRATE_STATES: tuple[str, ...] = tuple(
    t.state for m in MACHINES.values() for t in m.transitions if t.run is migrate.move)
"""States whose step dispatches a qmigrate (a bounded number per source node: steps/slots.py)."""
slots.SENDING.update(qmclone=CLONE_STATES, vzdump=BACKUP_STATES, qmigrate=MIGRATE_STATES)
