"""Every operation's state machine, as data: the map of what the engine does.

Read a line ``("migrated", SET_CPU_RAM)`` as: *at* state ``migrated`` the ``config`` workers
run ``hardware.set_cpu_ram``; the operation is then at the next line's state (after the last
line, at ``then``). Each action (pool, step function, label, retry) is named once below; a
machine pairs each of its states with one explicitly (:func:`pvekvm.lifecycle.chain`), so no
reader counts positions. ``python -m pvekvm machines [KIND]`` prints these tables with the retry
policy each transition resolves to under the settings; pvekvm/lifecycle.py describes the five
layers of retrying and what a machine declares (its event, the service statuses it starts from,
the service changes it makes).

State names are the seed manual's, which operators compare logs with: deploy's say what is
already in place (``ip_allocated``, ``migrated``, ``set_firewall``: at ``set_network`` the network
is set and the firewall step runs); every other machine names the step about to run, after a
short prefix of its own (``cp_stop``: change package is about to stop the VM). Each state is
written out literally, so ``grep -n cp_stop`` finds its line. Deploy, change package, reinstall
and restore configure the VM with the same hardware, network, firewall and cloud-init actions.
An action with ``skip_if`` (the additional-disk steps: the package has none) is passed by in the
previous step's commit, recorded as skipped with its reason, without a message of its own.
"""

from __future__ import annotations

from pvekvm.lifecycle import (
    LIVE_OR_SUSPENDED,
    Action,
    Machine,
    RetryPolicy,
    ServiceStatus,
    chain,
)
from steps import (
    allocation,
    backups,
    cloudinit,
    dns,
    firewall,
    hardware,
    hostname,
    lifecycle,
    migrate,
    notify,
    overage,
    package,
    power,
    provision,
    rdns,
    reimage,
    rescue,
    slots,
)
from steps.notify import mailer, verify_and_mail

S = ServiceStatus
SLOW_TO_BOOT = RetryPolicy(first_s=5.0)  # a VM that was just started may need a few seconds
# waiting for a clone slot: look again soon (the oldest waiter takes a slot PVE just freed)
CLONE_TURN = RetryPolicy(wait_s=0.5, wait_max_s=1.0)
# no node has room yet: look again within seconds of a VM leaving (a terminate, a node added)
ROOM_TURN = RetryPolicy(wait_s=1.0, wait_max_s=4.0)

NO_EXTRA_DISK = hardware.no_additional_disk

# --- the actions (pool, step, the manual's label) -------------------------------------------
ALLOCATE_IP = Action("ip", allocation.allocate_ips, "Allocate IP")
SET_DNS = Action("dns", dns.set_dns_records, "Set DNS records")
DELETE_DNS = Action("dns", dns.delete_dns_records, "Delete DNS records")
RESERVE_VMID = Action("clone", allocation.reserve_vmid, "Reserve VMID")
WELCOME_MAIL = Action("mail", mailer("welcome"), "Welcome email")
CHOOSE_NODE = Action("clone", provision.place_vm, "Choose node", ROOM_TURN)
CLONE = Action("clone", provision.clone_vm, "Clone from template", CLONE_TURN)
REMOVE_VM = Action("clone", provision.delete_vm, "Remove VM")
MIGRATE_TO_TARGET = Action("migrate", provision.migrate_to_target, "Migrate to target node")
SET_CPU_RAM = Action("config", hardware.set_cpu_ram, "Set CPU & RAM")
RESIZE_SYSTEM_DISK = Action("disks", hardware.resize_system_disk, "Resize system disk")
SYSTEM_DISK_IO = Action("disks", hardware.set_system_disk_io, "Set system disk I/O")
CREATE_EXTRA_DISK = Action("disks", hardware.create_additional_disk, "Create additional disk",
                           skip_if=NO_EXTRA_DISK)
RESIZE_EXTRA_DISK = Action("disks", hardware.resize_additional_disk, "Resize additional disk",
                           skip_if=NO_EXTRA_DISK)
EXTRA_DISK_IO = Action("disks", hardware.set_additional_disk_io, "Set additional disk I/O",
                       skip_if=NO_EXTRA_DISK)
SET_NETWORK = Action("network", hardware.set_network, "Configure network")
SET_FIREWALL = Action("firewall", firewall.set_firewall, "Configure firewall")
SET_CLOUDINIT = Action("cloudinit", cloudinit.set_cloudinit, "Configure cloud-init")
NEW_PASSWORD = Action("cloudinit", lifecycle.reset_password, "Configure cloud-init")
START_VM = Action("power", power.start_vm, "Start VM")
STOP_VM = Action("power", power.stop_vm, "Stop VM")
VERIFY_VM = Action("power", power.verify_running, "Verify VM", SLOW_TO_BOOT)


def verify_and_email(template: str) -> Action:
    """'Verify running + Email' with ``template``: the end of every operation that hands the
    client a (re)built VM."""
    return Action("mail", verify_and_mail(template), "Verify running + Email", SLOW_TO_BOOT)


# --- the machines ---------------------------------------------------------------------------
DEPLOY = Machine("deploy", "Deploy", chain(
    ("new", ALLOCATE_IP),
    ("ip_allocated", SET_DNS),
    ("dns_set", RESERVE_VMID),
    ("vmid_reserved", CHOOSE_NODE),
    ("placed", WELCOME_MAIL),
    ("welcome_sent", CLONE),
    ("clone", MIGRATE_TO_TARGET),
    ("migrated", SET_CPU_RAM),
    ("set_cpu_ram", RESIZE_SYSTEM_DISK),
    ("set_system_disk_size", SYSTEM_DISK_IO),
    ("set_system_disk_bandwidth", CREATE_EXTRA_DISK),
    ("set_created_additional_disk", RESIZE_EXTRA_DISK),
    ("set_additional_disk_size", EXTRA_DISK_IO),
    ("set_additional_disk_bandwidth", SET_NETWORK),
    ("set_network", SET_FIREWALL),
    ("set_firewall", SET_CLOUDINIT),
    ("set_cloudinit", START_VM),
    ("starting", verify_and_email("vm_ready")),
    then="ready"),
    event="create", starts_from=frozenset({S.PENDING}),
    busy_status=S.DEPLOYING, done_status=S.READY, failed_status=S.FAILED, admission=True)

CHANGE_PACKAGE = Machine("change_package", "ChangePackage", chain(
    ("change_package", Action("ip", package.update_ip_dns_firewall,
                              "Update IP + DNS + Firewall")),
    ("cp_stop", STOP_VM),
    ("cp_relocate", MIGRATE_TO_TARGET),
    ("cp_cpu_ram", SET_CPU_RAM),
    ("cp_system_disk_size", RESIZE_SYSTEM_DISK),
    ("cp_system_disk_bandwidth", SYSTEM_DISK_IO),
    ("cp_additional_disk", CREATE_EXTRA_DISK),
    ("cp_additional_disk_size", RESIZE_EXTRA_DISK),
    ("cp_additional_disk_bandwidth", EXTRA_DISK_IO),
    ("cp_network", SET_NETWORK),
    ("cp_firewall", SET_FIREWALL),
    ("cp_start", START_VM),
    ("cp_verify", VERIFY_VM),
    then="ready"),
    event="change_package", starts_from=LIVE_OR_SUSPENDED,
    busy_status=S.CHANGING, done_status=S.READY)

REINSTALL = Machine("reinstall", "Reinstall", chain(
    ("reinstall", Action("snapshot", backups.delete_all_snapshots, "Delete snapshots")),
    ("rs_remove", REMOVE_VM),
    ("rs_clone", CLONE),
    ("rs_migrate", MIGRATE_TO_TARGET),
    ("rs_cpu_ram", SET_CPU_RAM),
    ("rs_dns_delete", DELETE_DNS),
    ("rs_dns_set", SET_DNS),
    ("rs_system_disk_size", RESIZE_SYSTEM_DISK),
    ("rs_system_disk_bandwidth", SYSTEM_DISK_IO),
    ("rs_additional_disk", CREATE_EXTRA_DISK),
    ("rs_additional_disk_size", RESIZE_EXTRA_DISK),
    ("rs_additional_disk_bandwidth", EXTRA_DISK_IO),
    ("rs_network", SET_NETWORK),
    ("rs_firewall", SET_FIREWALL),
    ("rs_password", NEW_PASSWORD),
    ("rs_start", START_VM),
    ("rs_verify", verify_and_email("reinstalled")),
    then="ready"),
    event="reinstall", busy_status=S.REINSTALLING, done_status=S.READY,
    sets_when_done=("template_id", "ssh_keys"))  # the OS it was reinstalled with, its keys

RESTORE = Machine("restore", "Restore", chain(
    ("restore", STOP_VM),
    ("rt_restore", Action("backup", backups.restore_backup, "Restore backup")),
    ("rt_cpu_ram", SET_CPU_RAM),
    ("rt_system_disk_size", RESIZE_SYSTEM_DISK),
    ("rt_system_disk_bandwidth", SYSTEM_DISK_IO),
    ("rt_additional_disk", CREATE_EXTRA_DISK),
    ("rt_additional_disk_size", RESIZE_EXTRA_DISK),
    ("rt_additional_disk_bandwidth", EXTRA_DISK_IO),
    ("rt_network", SET_NETWORK),
    ("rt_firewall", SET_FIREWALL),
    ("rt_start", START_VM),
    ("rt_verify", verify_and_email("backup_restored")),
    then="ready"),
    event="backup_restore", busy_status=S.RESTORING, done_status=S.READY,
    way_out=("backup_restore", "reinstall"))  # a failed restore: another backup, or a fresh OS

RESET_PASSWORD = Machine("reset_password", "ResetPassword", chain(
    ("reset_password", STOP_VM),
    ("rp_cloudinit", NEW_PASSWORD),
    ("rp_start", START_VM),
    ("rp_verify", verify_and_email("password_reset")),
    then="ready"),
    event="reset_password", busy_status=S.RESETTING, done_status=S.READY,
    sets_when_done=("ssh_keys",))  # new keys the reset brought

TERMINATE = Machine("terminate", "Terminate", chain(
    ("terminate", STOP_VM),
    ("tm_backups", Action("backup", backups.delete_all_backups, "Delete backups")),
    ("tm_remove", REMOVE_VM),
    ("tm_dns", DELETE_DNS),
    ("tm_release", Action("ip", lifecycle.release_addresses, "Release IPs")),
    ("tm_forget", Action("ip", lifecycle.forget_client_secrets, "Erase client secrets")),
    then="terminated"),
    event="terminate", starts_from=LIVE_OR_SUSPENDED,
    busy_status=S.TERMINATING, done_status=S.TERMINATED, suspended_after=False)

# The second reinstall mode (steps/reimage.py): the same VM, its disks replaced by empty ones of
# the package's sizes, the installer ISO booted first; network and firewall are checked, not
# changed (the VM keeps its NIC, MAC, addresses, IPSet and rules). No mail: there is no password
# yet (the client sets one in the installer, through the console).
REINSTALL_ISO = Machine("reinstall_iso", "ReinstallIso", chain(
    ("reinstall_iso", Action("snapshot", backups.delete_all_snapshots, "Delete snapshots")),
    ("ri_stop", STOP_VM),
    ("ri_detach", Action("disks", reimage.detach_disks, "Detach disks")),
    ("ri_destroy", Action("disks", reimage.destroy_detached_disks, "Destroy old disks")),
    ("ri_system_disk", Action("disks", reimage.create_system_disk, "Create empty system disk")),
    ("ri_system_disk_size", RESIZE_SYSTEM_DISK),
    ("ri_system_disk_bandwidth", SYSTEM_DISK_IO),
    ("ri_additional_disk", CREATE_EXTRA_DISK),
    ("ri_additional_disk_size", RESIZE_EXTRA_DISK),
    ("ri_additional_disk_bandwidth", EXTRA_DISK_IO),
    ("ri_network", SET_NETWORK),
    ("ri_firewall", SET_FIREWALL),
    ("ri_cdrom", Action("iso", reimage.insert_installer, "Insert installer ISO")),
    ("ri_start", START_VM),
    ("ri_verify", VERIFY_VM),
    then="ready"),
    event="reinstall_iso", busy_status=S.REINSTALLING, done_status=S.READY)

# Rescue mode (steps/rescue.py): the VM boots the provider's rescue ISO, its disks after it in
# the boot order; rescue_off puts back what rescue_on replaced and boots from disk. The service's
# status stays (``rescue_before`` says it is in rescue); billing hears both.
RESCUE_ON = Machine("rescue_on", "Rescue", chain(
    ("rescue_on", STOP_VM),
    ("ro_boot", Action("iso", rescue.boot_rescue, "Boot from rescue ISO")),
    ("ro_start", START_VM),
    ("ro_verify", VERIFY_VM),
    then="done"),
    event="rescue_on", completed_event="service.rescue_on")

RESCUE_OFF = Machine("rescue_off", "Rescue", chain(
    ("rescue_off", STOP_VM),
    ("rf_restore", Action("iso", rescue.leave_rescue, "Restore boot order")),
    ("rf_start", START_VM),
    ("rf_verify", VERIFY_VM),
    then="done"),
    event="rescue_off", completed_event="service.rescue_off")

SUSPEND = Machine("suspend", "Suspend", chain(
    ("suspend", STOP_VM),
    then="suspended"),
    event="suspend", starts_from=LIVE_OR_SUSPENDED,
    busy_status=S.SUSPENDING, done_status=S.SUSPENDED, suspended_after=True)

UNSUSPEND = Machine("unsuspend", "Unsuspend", chain(
    ("unsuspend", START_VM),
    ("us_verify", VERIFY_VM),
    then="ready"),
    event="unsuspend", starts_from=LIVE_OR_SUSPENDED,
    busy_status=S.UNSUSPENDING, done_status=S.READY, suspended_after=False)


# Move one VM to another node (an operator's or billing's `migrate`, or a node drain): the
# target chosen once (pvekvm/placement.py), a local ISO detached (PVE cannot migrate it), then
# live or offline as the VM and its disks allow (steps/migrate.py), the detached ISO mounted
# again where the target reaches it (else left out, and said); its NIC (MAC, VLAN, rate) and
# firewall checked on the new node, shared-storage backups reached through it (local ones stay).
MIGRATE = Machine("migrate", "Migrate", chain(
    ("migrate", Action("migrate", migrate.choose_target, "Choose target node", CLONE_TURN)),
    ("mg_iso", Action("iso", migrate.detach_local_iso, "Detach local ISO")),
    ("mg_move", Action("migrate", migrate.move, "Migrate VM", CLONE_TURN)),
    ("mg_iso_back", Action("iso", migrate.reattach_iso, "Re-attach ISO")),
    ("mg_network", SET_NETWORK),
    ("mg_firewall", SET_FIREWALL),
    ("mg_backups", Action("backup", migrate.follow_backups, "Backups follow")),
    then="done"),
    event="migrate", starts_from=LIVE_OR_SUSPENDED, completed_event="service.migrated")


def one_step(kind: str, title: str, action: Action, *, event: str | None = None,
             completed_event: str | None = None, sets_when_done: tuple[str, ...] = ()) -> Machine:
    """A day-2 operation of one step: its only state is its kind, and it ends at ``done``
    leaving the service's status as it was."""
    return Machine(kind, title, chain((kind, action), then="done"), event=event,
                   completed_event=completed_event, sets_when_done=sets_when_done)


POWER = one_step("power", "Power", Action("power", lifecycle.power_action, "Power action"),
                 event="power")
SNAPSHOT_CREATE = one_step("snapshot_create", "Snapshot", Action(
    "snapshot", backups.create_snapshot, "Create snapshot"), event="snapshot_create")
SNAPSHOT_DELETE = one_step("snapshot_delete", "Snapshot", Action(
    "snapshot", backups.delete_snapshot, "Delete snapshot"), event="snapshot_delete")
SNAPSHOT_ROLLBACK = one_step("snapshot_rollback", "Snapshot", Action(
    "snapshot", backups.rollback_snapshot, "Roll back to snapshot"), event="snapshot_rollback")
BACKUP_CREATE = one_step("backup_create", "Backup", Action(
    "backup", backups.create_backup, "Create backup"), event="backup_create")
BACKUP_DELETE = one_step("backup_delete", "Backup", Action(
    "backup", backups.delete_backup, "Delete backup"), event="backup_delete")
ISO_MOUNT = one_step("iso_mount", "ISO", Action("iso", lifecycle.mount_iso, "Mount ISO"),
                     event="iso_mount")
ISO_UNMOUNT = one_step("iso_unmount", "ISO", Action(
    "iso", lifecycle.unmount_iso, "Unmount ISO"), event="iso_unmount")
RDNS_SET = one_step("rdns_set", "ReverseDNS", Action(
    "dns", rdns.set_client_ptr, "Set reverse DNS"), event="rdns_set")
RDNS_RESET = one_step("rdns_reset", "ReverseDNS", Action(
    "dns", rdns.reset_client_ptr, "Reset reverse DNS"), event="rdns_reset")
# The client's mail language (language_change): nothing on Proxmox; the service's language is
# set as the operation completes (params "service"), so billing hears it accepted and completed
# like any order, in the order it sent it; allowed while suspended (it starts no VM)
LANGUAGE_CHANGE = Machine("language_change", "Language", chain(
    ("language_change", Action("mail", notify.use_language, "Set mail language")),
    then="done"),
    event="language_change", starts_from=LIVE_OR_SUSPENDED, sets_when_done=("language",))
# Traffic over quota (the scheduler's overage pass starts them; never on a suspended service):
# only net0's rate changes (pvekvm/overage.py has the rule, steps/overage.py the steps)
THROTTLE = one_step("throttle", "Throttle", Action(
    "network", overage.throttle, "Set overage rate"), completed_event="service.throttled",
    sets_when_done=("throttled_period",))
UNTHROTTLE = one_step("unthrottle", "Unthrottle", Action(
    "network", overage.unthrottle, "Restore package rate"),
    completed_event="service.unthrottled", sets_when_done=("throttled_period",))

# The client's own firewall rules, replaced as one set after the engine's anti-spoofing
# (steps/firewall.py); reinstall, restore, change package and migrate re-apply the saved set
FIREWALL_RULES_SET = one_step("firewall_rules_set", "FirewallRules", Action(
    "firewall", firewall.set_client_rules, "Set client firewall rules"),
    event="firewall_rules_set")

# The client renames its VM: the name taken (create's ownership rules), DNS moved, cloud-init
# given the name; not while suspended
HOSTNAME_CHANGE = Machine("hostname_change", "HostnameChange", chain(
    ("hostname_change", Action("dns", hostname.rename, "Take the new host name")),
    ("hn_dns", SET_DNS),
    ("hn_cloudinit", SET_CLOUDINIT),
    then="done"),
    event="hostname_change")

MACHINES: dict[str, Machine] = {m.kind: m for m in (
    DEPLOY, CHANGE_PACKAGE, REINSTALL, RESTORE, RESET_PASSWORD, TERMINATE, SUSPEND, UNSUSPEND,
    POWER, SNAPSHOT_CREATE, SNAPSHOT_DELETE, SNAPSHOT_ROLLBACK, BACKUP_CREATE, BACKUP_DELETE,
    ISO_MOUNT, ISO_UNMOUNT, RDNS_SET, RDNS_RESET, THROTTLE, UNTHROTTLE, MIGRATE,
    LANGUAGE_CHANGE, REINSTALL_ISO, RESCUE_ON, RESCUE_OFF, FIREWALL_RULES_SET, HOSTNAME_CHANGE,
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
