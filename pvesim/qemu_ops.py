"""QEMU VM operations: clone, migrate, power state, snapshots."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from .model import (
    DRIVE_RE,
    LINKED_CLONE_TYPES,
    UNUSED_RE,
    PVEError,
    drive_file,
    drive_opt,
    is_cdrom,
    is_cloudinit,
    parse_size,
    random_mac,
)
from .qemu import V, check_lock, check_node, vm_of, vm_summary, vm_task
from .routes import Ctx, route
from .schema import ParamError
from .tasks import Task, TaskError
from .vmconfig import apply_pending, ci_values, render_config

# --- clone ---------------------------------------------------------------------------------


def _storage_of(volid: str) -> str:
    return volid.split(":", 1)[0]


def _linked_volid(c: Any, base: str, storeid: str, node: str, newid: int, taken: set) -> str:
    if c.storages[storeid]["type"] in ("lvmthin", "lvm", "rbd", "zfspool"):
        name = c.new_disk_volid(storeid, node, newid, None, taken).split(":", 1)[1]
        return f"{storeid}:{base.split(':', 1)[1]}/{name}"
    name = c.new_disk_volid(storeid, node, newid, "qcow2", taken).split(":", 1)[1]
    return f"{storeid}:{base.split(':', 1)[1].split('/')[0]}/{base.split('/')[-1]}/{name}"


@route("POST", V + "/clone")
def clone_vm(ctx: Ctx, p: dict[str, Any]) -> str:
    c = ctx.cluster
    src = vm_of(ctx, p)
    vmid, newid, node = src["vmid"], int(p["newid"]), src["node"]
    target = p.get("target")
    storage = p.get("storage")
    if target:
        check_node(ctx, target)
    if storage:
        scfg = c.storages.get(storage)
        if scfg is None:
            raise PVEError(f"storage '{storage}' does not exist")
        if "images" not in scfg["content"]:
            raise ParamError({"storage": f"storage '{storage}' does not support vm images"})
        if target and not scfg["shared"]:
            raise PVEError(f"can't clone to non-shared storage '{storage}'")
    check_lock(src, p)
    snapname = p.get("snapname")
    if snapname and snapname not in src["snapshots"]:
        raise PVEError(f"snapshot '{snapname}' does not exist")
    is_template = src["config"].get("template") == "1"
    full = str(p["full"]) == "1" if "full" in p else not is_template
    if storage and not full:
        raise PVEError("parameter 'storage' not allowed for linked clones")
    if p.get("format") and not full:
        raise PVEError("parameter 'format' not allowed for linked clones")
    oldconf = src["snapshots"][snapname]["config"] if snapname else src["config"]
    disks = [(k, v) for k, v in oldconf.items() if DRIVE_RE.match(k) and not is_cdrom(v)
             and drive_file(v) not in ("none", "cdrom")]
    for k, v in disks:
        f = drive_file(v)
        # qemu-server: volume_has_feature('clone') holds only for a base volume (a template's
        # disk) on a storage type that can clone it; the cloud-init drive is always copied
        if not full and not is_cloudinit(v) and (
                not f.split("/")[-1].split(":")[-1].startswith("base-")
                or c.storages[_storage_of(f)]["type"] not in LINKED_CLONE_TYPES):
            raise PVEError(f"Linked clone feature is not supported for drive '{k}'")
    shared = all(c.storages[_storage_of(drive_file(v))]["shared"] for _, v in disks)
    if storage:
        shared = bool(c.storages[storage]["shared"])
    if target and target != node and not shared:
        raise PVEError(f"can't clone VM to node '{target}' (VM uses local storage)")
    if newid in c.vms:
        raise PVEError(f"unable to create VM {newid}: config file already exists")

    dest_node = target or node
    new_vm = c.new_vm(newid, node, {"lock": "clone"})
    sid0 = storage or (_storage_of(drive_file(disks[0][1])) if disks else "")
    key = ("shared" if sid0 and c.storages[sid0]["shared"] else dest_node, sid0)
    busy = ctx.sim.active_clones.get(key, 0) if full and disks else 0
    if full and disks:
        ctx.sim.active_clones[key] = busy + 1
        ctx.sim.most_clones[key] = max(ctx.sim.most_clones.get(key, 0), busy + 1)
    contended = busy >= ctx.sim.clone_storage_limit

    released = False

    def release() -> None:  # once: from the work, its rollback, or an injected failure
        nonlocal released
        if full and disks and not released:
            released = True
            ctx.sim.active_clones[key] -= 1

    def work(task: Task) -> None:
        try:
            if contended:
                sid = key[1]
                msg = (f"cfs-lock 'storage-{sid}' error: got lock request timeout"
                       if c.storages[sid]["shared"] else
                       f"can't lock file '/var/lock/pve-manager/pve-storage-{sid}' - got timeout")
                raise TaskError(f"clone failed: {msg}")
            conf: dict[str, str] = {}
            taken: set[str] = set()
            for k, v in oldconf.items():
                if k in ("snapshots", "parent", "snaptime", "vmstate", "snapstate", "lock",
                         "template") or UNUSED_RE.match(k):
                    continue
                if k.startswith("net") and k[3:].isdigit():
                    model = v.split(",")[0].split("=")[0]
                    conf[k] = ",".join([f"{model}={random_mac(c.rng)}"] + v.split(",")[1:])
                elif DRIVE_RE.match(k) and not is_cdrom(v) and drive_file(v) not in ("none",):
                    f = drive_file(v)
                    sid = storage or _storage_of(f)
                    rest = v.split(",")[1:]
                    if is_cloudinit(v):
                        new = c.cloudinit_volid(sid, newid)
                        c.add_volume(dest_node, new, 4 * 1024**2, "images", newid)
                    else:
                        vol = c.volume(f, node)
                        size = vol["size"] if vol else parse_size(drive_opt(v, "size") or "0")
                        if full:
                            new = c.new_disk_volid(sid, dest_node, newid, p.get("format"), taken)
                        else:
                            new = _linked_volid(c, f, sid, dest_node, newid, taken)
                        c.add_volume(dest_node, new, size, "images", newid)
                        task.log.append(f"create {'full' if full else 'linked'} clone of drive "
                                        f"{k} ({f})")
                    taken.add(new)
                    conf[k] = ",".join([new] + rest)
                else:
                    conf[k] = v
            conf["name"] = p.get("name") or f"Copy-of-VM-{oldconf.get('name', vmid)}"
            if p.get("description"):
                conf["description"] = p["description"]
            conf["smbios1"] = f"uuid={uuid.uuid4()}"
            if "vmgenid" in conf:
                conf["vmgenid"] = str(uuid.uuid4())
            new_vm["config"] = conf
            new_vm["node"] = dest_node
            new_vm["firewall"] = copy.deepcopy(src["firewall"])
        finally:
            release()

    def rollback() -> None:
        release()
        for _, volid in c.vm_disks(new_vm["config"]):
            c.remove_volume(new_vm["node"], volid)
        c.vms.pop(newid, None)

    log = [f"create {'full' if full else 'linked'} clone of VM {vmid} to {newid}"]
    if ctx.sim.faults.roll(ctx.sim.faults.lock_timeout_rate):
        def work_fail(task: Task) -> None:
            release()
            raise TaskError(f"can't lock file '/var/lock/qemu-server/lock-{newid}.conf' "
                            "- got timeout")
        return ctx.sim.tasks.start(node, "qmclone", vmid, ctx.user, work_fail, rollback,
                                   log).upid
    duration = 20 if full else 1  # a linked clone only writes a thin snapshot/qcow2 header
    return ctx.sim.tasks.start(node, "qmclone", vmid, ctx.user, work, rollback, log,
                               duration).upid


# --- migrate -------------------------------------------------------------------------------

def _local_disks(c: Any, vm: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in vm["config"].items():
        if not (DRIVE_RE.match(k) or UNUSED_RE.match(k)):
            continue
        f = v if UNUSED_RE.match(k) else drive_file(v)
        if f in ("none", "") or (f != "cdrom" and ":" not in f):
            continue
        if f == "cdrom":
            out.append({"volid": "cdrom", "cdrom": 1, "drivename": k})
            continue
        if c.storages.get(_storage_of(f), {}).get("shared"):
            continue
        vol = c.volume(f, vm["node"]) or {}
        d = {"volid": f, "size": vol.get("size", 0), "drivename": k,
             "referenced_in_config": 1}
        if not UNUSED_RE.match(k) and is_cdrom(v):
            d["cdrom"] = 1
        if UNUSED_RE.match(k):
            d["is_unused"] = 1
        out.append(d)
    return out


@route("GET", V + "/migrate")
def migrate_precondition(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    others = [n for n in ctx.cluster.nodes if n != vm["node"]]
    return {"running": 1 if vm["status"] == "running" else 0, "allowed_nodes": others,
            "not_allowed_nodes": {}, "local_disks": _local_disks(ctx.cluster, vm),
            "local_resources": [], "mapped-resources": []}


def _storage_map(spec: str | None) -> dict[str, str]:
    """``targetstorage`` (pve-targetstorage): ``src:dst`` pairs, a lone storage for every
    source, or ``1`` for each storage to itself (PVE::JSONSchema::parse_idmap)."""
    if not spec or spec == "1":
        return {}
    out = {}
    for part in spec.replace(";", ",").split(","):
        src, sep, dst = part.partition(":")
        out[src if sep else "*"] = dst if sep else src
    return out


def _in_snapshots(vm: dict[str, Any]) -> set[str]:
    """Volumes a snapshot's config refers to (QemuMigrate's ``referenced_in_snapshot``)."""
    return {drive_file(v) for snap in vm["snapshots"].values()
            for k, v in snap["config"].items() if DRIVE_RE.match(k) and not is_cdrom(v)}


def snapshot_movable(c: Any, volid: str) -> bool:
    """Whether an offline migration carries a local volume together with its snapshots
    (QemuMigrate.pm scan_local_volumes; pve-storage ``volume_export_formats`` with
    ``with_snapshots``): on ZFS (``zfs send -R``), as a qcow2 file (in-qcow2 snapshots; not with
    ``snapshot-as-volume-chain``) and as raw on btrfs; never on lvm-thin or lvm."""
    scfg = c.storages.get(_storage_of(volid), {})
    fmt = _format_of(volid)  # parse_volname: a file's suffix, raw on block storage
    return scfg.get("type") == "zfspool" or (scfg.get("type") == "btrfs" and fmt == "raw") \
        or (fmt == "qcow2" and not scfg.get("snapshot-as-volume-chain"))


def _format_of(volid: str) -> str:
    name = volid.split(":", 1)[-1]
    return name.rsplit(".", 1)[1] if "." in name.rsplit("/", 1)[-1] else "raw"


@route("POST", V + "/migrate")
def migrate_vm(ctx: Ctx, p: dict[str, Any]) -> str:
    c = ctx.cluster
    vm = vm_of(ctx, p)
    target, node, vmid = p["target"], vm["node"], vm["vmid"]
    if target == node:
        raise ParamError({"target": "target is local node."})
    check_node(ctx, target)
    running = vm["status"] == "running"
    if running and str(p.get("online", "0")) != "1":
        raise PVEError("can't migrate running VM without --online")
    check_lock(vm, p)
    # PVE/API2/Qemu.pm migrate_vm: a stopped VM asked online is migrated offline
    offline_note = [] if running or str(p.get("online", "0")) != "1" else \
        ["VM isn't running. Doing offline migration instead."]
    smap = _storage_map(p.get("targetstorage"))
    start = time.monotonic()

    def aborted(task: Task, msg: str) -> TaskError:
        dur = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - start))
        task.log.append(f"ERROR: {msg}")
        task.log.append(f"ERROR: migration aborted (duration {dur}): {msg}")
        return TaskError("migration aborted")

    def work(task: Task) -> None:
        if target in ctx.sim.faults.down_nodes:
            raise aborted(task, "Can't connect to destination address using public key")
        problems = []
        local = _local_disks(c, vm)
        snapshotted = _in_snapshots(vm)
        for d in local:
            # QemuMigrate.pm scan_local_volumes: a cloud-init drive is 'generated' (copied
            # offline, never 'attached'); a local disk in a snapshot cannot move live, and
            # offline only where storage_migrate can carry its snapshots (snapshot_movable)
            generated = is_cloudinit(vm["config"].get(d["drivename"], ""))
            if d["volid"] == "cdrom":
                problems.append("can't migrate local cdrom drive")
            elif d.get("cdrom"):
                problems.append(f"can't migrate local disk '{d['volid']}': local cdrom image")
            elif d["volid"] in snapshotted and running:
                problems.append(f"can't migrate local disk '{d['volid']}': online storage "
                                "migration not possible if non-replicated snapshot exists")
            elif d["volid"] in snapshotted and not snapshot_movable(c, d["volid"]):
                problems.append(f"can't migrate local disk '{d['volid']}': non-migratable "
                                "snapshot exists")
            elif running and not generated and str(p.get("with-local-disks", "0")) != "1":
                problems.append(f"can't migrate local disk '{d['volid']}': can't live migrate "
                                "attached local disks without with-local-disks option")
        if problems:
            for pr in problems:
                task.log.append(f"WARN: {pr}")
            raise aborted(task, "Problem found while scanning volumes - can't migrate VM - "
                                "check log")
        for d in local:
            f = d["volid"]
            sid = _storage_of(f)
            dst = smap.get(sid, smap.get("*", sid))
            vol = c.volume(f, node)
            c.remove_volume(node, f)
            if dst == sid:
                new = f
            elif is_cloudinit(vm["config"].get(d["drivename"], "")):
                new = c.cloudinit_volid(dst, vmid)  # storage_migrate keeps the volume's name
            else:
                new = c.new_disk_volid(dst, target, vmid)
            c.add_volume(target, new, vol["size"] if vol else 0, "images", vmid)
            key = d["drivename"]
            vm["config"][key] = vm["config"][key].replace(f, new, 1)
            task.log.append(f"found local disk '{f}' ({key})")
        vm["node"] = target
        task.log.append(f"migration finished successfully (duration 00:00:{len(local) + 1:02d})")

    return vm_task(ctx, vm, "qmigrate", "migrate", work, p,
                   log=offline_note + [f"starting migration of VM {vmid} to node '{target}'"])


@route("POST", V + "/move_disk")
def move_disk(ctx: Ctx, p: dict[str, Any]) -> str:
    """Move one volume to another storage on the VM's node (qemu-server's ``qmmove``): the old
    volume is kept as ``unusedN`` unless ``delete=1``."""
    c = ctx.cluster
    vm = vm_of(ctx, p)
    disk, storage = p["disk"], p.get("storage")
    if p.get("target-vmid") or p.get("target-disk"):
        raise PVEError("pvesim: moving a disk to another VM is not supported")
    if not storage:
        raise ParamError({"storage": "parameter is required when moving to the same VM"})
    check_lock(vm, p)
    scfg = c.storages.get(storage)
    if scfg is None:
        raise PVEError(f"storage '{storage}' does not exist")
    if "images" not in scfg["content"]:
        raise PVEError(f"storage '{storage}' does not support vm images")
    value = vm["config"].get(disk)
    if value is None:
        raise PVEError(f"disk '{disk}' does not exist")
    if is_cdrom(value):
        raise PVEError("you can't move a cdrom")
    old = drive_file(value)
    if _storage_of(old) == storage and (not p.get("format") or old.endswith(p["format"])):
        raise PVEError("you can't move to the same storage with same format")
    delete = str(p.get("delete", "0")) == "1"
    if vm["snapshots"] and delete:
        raise PVEError("you can't move a disk with snapshots and delete the source")

    def work(task: Task) -> None:
        node, vmid = vm["node"], vm["vmid"]
        vol = c.volume(old, node)
        new = (c.cloudinit_volid(storage, vmid) if is_cloudinit(value)
               else c.new_disk_volid(storage, node, vmid, p.get("format")))
        c.add_volume(node, new, vol["size"] if vol else 0, "images", vmid)
        vm["config"][disk] = vm["config"][disk].replace(old, new, 1)
        task.log.append(f"moving disk '{old}' to '{new}'")
        if delete:
            c.remove_volume(node, old)
            return
        n = 0
        while f"unused{n}" in vm["config"]:
            n += 1
        vm["config"][f"unused{n}"] = old

    return vm_task(ctx, vm, "qmmove", None, work, p,
                   log=[f"create full clone of drive {disk} ({old})"])


# --- power state ---------------------------------------------------------------------------

S = V + "/status"


@route("GET", S)
def status_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    vm_of(ctx, p)
    return [{"subdir": s} for s in ("current", "start", "stop", "reset", "shutdown",
                                     "reboot", "suspend", "resume")]


@route("GET", S + "/current")
def status_current(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    d = vm_summary(ctx, vm)
    d["qmpstatus"] = vm["qmpstatus"]
    d["ha"] = {"managed": 0}
    if vm["config"].get("agent", "0").split(",")[0] in ("1", "enabled=1"):
        d["agent"] = 1
    if vm["status"] == "running":
        d["running-machine"] = "pc-i440fx-8.1+pve0"
        d["running-qemu"] = "8.1.5"
    return d


def _ci_regen(vm: dict[str, Any]) -> None:
    vm["ci_applied"] = ci_values(vm["config"])


@route("POST", S + "/start")
def vm_start(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)

    def work(task: Task) -> None:
        if vm["config"].get("template") == "1":
            raise TaskError("you can't start a vm if it's a template")
        if vm["status"] == "running":
            raise TaskError(f"VM {vm['vmid']} already running")
        apply_pending(vm)
        _ci_regen(vm)
        vm["status"], vm["qmpstatus"], vm["started"] = "running", "running", time.time()

    return vm_task(ctx, vm, "qmstart", None, work, p)


def _stopper(wtype: str, need_running: bool):
    def handler(ctx: Ctx, p: dict[str, Any]) -> str:
        vm = vm_of(ctx, p)
        if need_running and vm["status"] != "running":
            raise PVEError(f"VM {vm['vmid']} not running")

        def work(task: Task) -> None:
            if wtype == "qmreboot":
                apply_pending(vm)
                _ci_regen(vm)
                vm["started"] = time.time()
                return
            if wtype == "qmreset":
                return
            vm["status"], vm["qmpstatus"], vm["started"] = "stopped", "stopped", 0.0

        return vm_task(ctx, vm, wtype, None, work, p)

    return handler


route("POST", S + "/stop")(_stopper("qmstop", False))
route("POST", S + "/shutdown")(_stopper("qmshutdown", True))
route("POST", S + "/reboot")(_stopper("qmreboot", True))
route("POST", S + "/reset")(_stopper("qmreset", True))


def _qmp_setter(wtype: str, qmpstatus: str) -> Any:
    """suspend/resume: only a running VM; the task flips its QMP status."""
    def handler(ctx: Ctx, p: dict[str, Any]) -> str:
        vm = vm_of(ctx, p)
        if vm["status"] != "running":
            raise PVEError(f"VM {vm['vmid']} not running")

        def work(task: Task) -> None:
            vm["qmpstatus"] = qmpstatus

        return vm_task(ctx, vm, wtype, None, work, p)

    return handler


route("POST", S + "/suspend")(_qmp_setter("qmsuspend", "paused"))
route("POST", S + "/resume")(_qmp_setter("qmresume", "running"))


@route("POST", V + "/agent/ping")
def agent_ping(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    if vm["status"] != "running":
        raise PVEError(f"VM {vm['vmid']} is not running")
    if vm["config"].get("agent", "0").split(",")[0] not in ("1", "enabled=1"):
        raise PVEError("No QEMU guest agent configured")
    return {"result": {}}


# --- snapshots -----------------------------------------------------------------------------

SN = V + "/snapshot"


@route("GET", SN)
def snapshot_list(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    vm = vm_of(ctx, p)
    out = []
    for name, s in vm["snapshots"].items():
        e = {"name": name, "snaptime": s["snaptime"], "description": s.get("description", "")}
        if s.get("vmstate"):
            e["vmstate"] = 1
        if s["config"].get("parent"):
            e["parent"] = s["config"]["parent"]
        out.append(e)
    cur = {"name": "current", "description": "You are here!", "digest": ctx.cluster.digest(vm),
           "running": 1 if vm["status"] == "running" else 0}
    if vm["config"].get("parent"):
        cur["parent"] = vm["config"]["parent"]
    out.append(cur)
    return out


@route("POST", SN)
def snapshot_create(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    name = p["snapname"]
    if name == "current" or name.lower() == "pending":  # as qemu-server's API2/Qemu.pm
        raise PVEError(f"unable to use snapshot name '{name.lower()}' (reserved name)")

    def work(task: Task) -> None:
        if name in vm["snapshots"]:
            raise TaskError(f"snapshot name '{name}' already used")
        conf = {k: v for k, v in vm["config"].items() if k != "lock"}
        vmstate = str(p.get("vmstate", "0")) == "1" and vm["status"] == "running"
        vm["snapshots"][name] = {"config": conf, "snaptime": int(time.time()),
                                 "description": p.get("description", ""), "vmstate": vmstate,
                                 "running": vm["status"] == "running"}
        vm["config"]["parent"] = name
        task.log.append(f"snapshotting '{name}'")

    return vm_task(ctx, vm, "qmsnapshot", "snapshot", work, p)


@route("GET", SN + "/{snapname}")
def snapshot_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    vm = vm_of(ctx, p)
    if p["snapname"] not in vm["snapshots"]:
        raise PVEError(f"snapshot '{p['snapname']}' does not exist")
    return [{"subdir": "rollback"}, {"subdir": "config"}]


@route("GET", SN + "/{snapname}/config")
def snapshot_config(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    s = vm["snapshots"].get(p["snapname"])
    if s is None:
        raise PVEError(f"snapshot '{p['snapname']}' does not exist")
    out = render_config(s["config"])
    out.update({"snaptime": s["snaptime"], "description": s.get("description", "")})
    return out


@route("PUT", SN + "/{snapname}/config")
def snapshot_config_update(ctx: Ctx, p: dict[str, Any]) -> None:
    vm = vm_of(ctx, p)
    check_lock(vm, p)
    s = vm["snapshots"].get(p["snapname"])
    if s is None:
        raise PVEError(f"snapshot '{p['snapname']}' does not exist")
    if "description" in p:
        s["description"] = p["description"]


def _task_snapshot(vm: dict[str, Any], name: str) -> dict[str, Any]:
    """The snapshot a task works on; gone meanwhile → the task fails as PVE's does."""
    s = vm["snapshots"].get(name)
    if s is None:
        raise TaskError(f"snapshot '{name}' does not exist")
    return s


@route("DELETE", SN + "/{snapname}")
def snapshot_delete(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    name = p["snapname"]

    def work(task: Task) -> None:
        s = _task_snapshot(vm, name)
        parent = s["config"].get("parent")
        # children of the deleted snapshot (and the current state) move up to its parent
        for conf in [o["config"] for o in vm["snapshots"].values()] + [vm["config"]]:
            if conf.get("parent") == name:
                if parent:
                    conf["parent"] = parent
                else:
                    conf.pop("parent", None)
        del vm["snapshots"][name]

    return vm_task(ctx, vm, "qmdelsnapshot", "snapshot-delete", work, p)


@route("POST", SN + "/{snapname}/rollback")
def snapshot_rollback(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    name = p["snapname"]

    def work(task: Task) -> None:
        s = _task_snapshot(vm, name)
        conf = dict(s["config"])
        conf["parent"] = name
        vm["config"] = conf
        vm["pending"], vm["pending_delete"] = {}, []
        if s.get("vmstate") or str(p.get("start", "0")) == "1":
            vm["status"], vm["qmpstatus"], vm["started"] = "running", "running", time.time()
        else:
            vm["status"], vm["qmpstatus"], vm["started"] = "stopped", "stopped", 0.0

    return vm_task(ctx, vm, "qmrollback", "rollback", work, p)
