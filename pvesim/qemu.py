"""QEMU VM endpoints: list/create/destroy, config, resize, clone, migrate, status, snapshots."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from .model import (
    DRIVE_RE,
    PVEError,
    drive_file,
    drive_opt,
    format_size,
    is_cdrom,
    is_cloudinit,
    parse_size,
    random_mac,
    set_drive_opt,
)
from .routes import Ctx, route
from .tasks import Task, TaskError
from .vmconfig import ConfigChange, render_config

Q = "/nodes/{node}/qemu"
V = Q + "/{vmid}"


# --- helpers -------------------------------------------------------------------------------

def vm_of(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    return ctx.cluster.vm_on(p["node"], p["vmid"])


def check_lock(vm: dict[str, Any], p: dict[str, Any]) -> None:
    lock = vm["config"].get("lock")
    if lock and not str(p.get("skiplock", "0")) == "1":
        raise PVEError(f"VM is locked ({lock})")


def lock_timeout_msg(vmid: int) -> str:
    return f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"


def sync_write_guard(ctx: Ctx, vm: dict[str, Any], p: dict[str, Any]) -> None:
    """Checks done by PVE before a synchronous modification (lock file + config lock)."""
    if ctx.sim.faults.roll(ctx.sim.faults.lock_timeout_rate):
        raise PVEError(lock_timeout_msg(vm["vmid"]))
    check_lock(vm, p)


def check_digest(vm: dict[str, Any], p: dict[str, Any], ctx: Ctx) -> None:
    if p.get("digest") and p["digest"] != ctx.cluster.digest(vm):
        raise PVEError("detected modified configuration - file changed by other user? Try again.")


def vm_task(ctx: Ctx, vm: dict[str, Any], wtype: str, lock: str | None,
            work: Callable[[Task], None], p: dict[str, Any] | None = None,
            log: list[str] | None = None, duration: float | None = None) -> str:
    """Start a VM worker: checks the config lock in the worker like PVE, holds ``lock``."""
    vmid = vm["vmid"]
    cur = vm["config"].get("lock")
    skip = p is not None and str(p.get("skiplock", "0")) == "1"
    if ctx.sim.faults.roll(ctx.sim.faults.lock_timeout_rate):
        msg = lock_timeout_msg(vmid)
        return _failing(ctx, vm, wtype, msg)
    if cur and not skip:
        return _failing(ctx, vm, wtype, f"VM is locked ({cur})")
    if lock:
        vm["config"]["lock"] = lock

    def unlock() -> None:
        if lock and vm["config"].get("lock") == lock:
            del vm["config"]["lock"]

    def run(task: Task) -> None:
        try:
            work(task)
        finally:
            unlock()

    return ctx.sim.tasks.start(vm["node"], wtype, vmid, ctx.user, run, unlock, log,
                               duration).upid


def _failing(ctx: Ctx, vm: dict[str, Any], wtype: str, msg: str) -> str:
    def fail(task: Task) -> None:
        raise TaskError(msg)

    return ctx.sim.tasks.start(vm["node"], wtype, vm["vmid"], ctx.user, fail,
                               duration=0.2).upid


def vm_summary(ctx: Ctx, vm: dict[str, Any]) -> dict[str, Any]:
    conf = vm["config"]
    running = vm["status"] == "running"
    maxmem = int(str(conf.get("memory", "512")).split(",")[0].replace("current=", "")) * 1024**2
    cpus = int(conf.get("cores", "1")) * int(conf.get("sockets", "1"))
    d: dict[str, Any] = {
        "vmid": vm["vmid"], "name": conf.get("name", f"VM {vm['vmid']}"), "status": vm["status"],
        "maxmem": maxmem, "maxdisk": ctx.cluster.root_disk_size(conf), "cpus": cpus,
        "uptime": int(time.time() - vm["started"]) if running else 0,
        "cpu": 0.02 if running else 0, "mem": maxmem // 3 if running else 0, "disk": 0,
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    }
    if running:
        d["pid"] = 100000 + vm["vmid"]
    if conf.get("template") == "1":
        d["template"] = 1
    if "tags" in conf:
        d["tags"] = conf["tags"]
    if "lock" in conf:
        d["lock"] = conf["lock"]
    return d


def check_node(ctx: Ctx, node: str, param: str = "target") -> None:
    if node not in ctx.cluster.nodes:
        raise PVEError(f"no such cluster node '{node}'")


# --- list / create / destroy ---------------------------------------------------------------

@route("GET", Q)
def vm_list(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    return [vm_summary(ctx, vm) for vm in ctx.cluster.vms.values() if vm["node"] == p["node"]]


@route("GET", V)
def vm_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    vm_of(ctx, p)
    return [{"subdir": s} for s in ("config", "pending", "status", "snapshot", "firewall",
                                     "cloudinit", "migrate", "resize", "clone")]


@route("POST", Q)
def create_vm(ctx: Ctx, p: dict[str, Any]) -> str:
    c, node = ctx.cluster, p["node"]
    vmid = int(p["vmid"])
    archive = p.get("archive")
    emsg = f"unable to {'restore' if archive else 'create'} VM {vmid} -"
    if vmid in c.vms and not (archive and str(p.get("force", "0")) == "1"):
        raise PVEError(f"{emsg} VM {vmid} already exists on node '{c.vms[vmid]['node']}'")
    if archive:
        return _restore(ctx, p, vmid, node, emsg)
    vm = c.new_vm(vmid, node, {})
    try:
        change = ConfigChange(c, vm, p, running=False)
    except Exception:
        del c.vms[vmid]
        raise
    change.conf.setdefault("smbios1", f"uuid={uuid.uuid4()}")
    change.conf.setdefault("vmgenid", str(uuid.uuid4()))
    change.conf.setdefault("meta", f"creation-qemu=8.1.5,ctime={int(time.time())}")
    vm["config"] = {"lock": "create"}

    def work(task: Task) -> None:
        change.conf.pop("lock", None)
        change.commit()
        task.log.extend(change.log)
        if str(p.get("start", "0")) == "1":
            vm["status"], vm["qmpstatus"], vm["started"] = "running", "running", time.time()

    def rollback() -> None:
        c.vms.pop(vmid, None)

    return ctx.sim.tasks.start(node, "qmcreate", vmid, ctx.user, work, rollback,
                               duration=3 if change.new_volumes else 1).upid


def _restore(ctx: Ctx, p: dict[str, Any], vmid: int, node: str, emsg: str) -> str:
    c = ctx.cluster
    archive = p["archive"]
    vol = c.volume(archive, node)
    if vol is None or vol.get("content") != "backup":  # PVE::Storage::abs_filesystem_path
        raise PVEError(f"can't find file '{archive}'")
    if vmid in c.vms and c.vms[vmid]["node"] != node:
        # create_and_lock_config writes nodes/<node>/qemu-server/<vmid>.conf: pmxcfs refuses
        # a VMID whose config another node holds (memdb.c vmlist_different_vm_exists: EEXIST)
        raise PVEError(f"{emsg} close (rename) atomic file '/etc/pve/nodes/{node}/qemu-server/"
                       f"{vmid}.conf' failed: File exists")
    if vmid in c.vms and c.vms[vmid]["status"] == "running":
        raise PVEError(f"{emsg} vm is running")
    storage = p.get("storage")
    if storage and storage not in c.storages:
        raise PVEError(f"{emsg} storage '{storage}' does not exist")
    old = c.vms.get(vmid)
    if old is not None:
        check_lock(old, p)
    backup_conf = copy.deepcopy(vol.get("config") or {})
    vm = c.new_vm(vmid, node, {"lock": "create"})

    def work(task: Task) -> None:
        if old is not None:
            for _, volid in c.vm_disks(old["config"]):
                c.remove_volume(old["node"], volid)
        conf: dict[str, str] = {}
        taken: set[str] = set()
        for k, v in backup_conf.items():
            if k.startswith("unused") or k == "lock":
                continue
            if DRIVE_RE.match(k) and not is_cdrom(v):
                src = drive_file(v)
                sid = storage or src.split(":", 1)[0]
                if is_cloudinit(v):
                    new = c.cloudinit_volid(sid, vmid)
                    size = 4 * 1024**2
                else:
                    new = c.new_disk_volid(sid, node, vmid, None, taken)
                    size = parse_size(drive_opt(v, "size") or "1G")
                taken.add(new)
                c.add_volume(node, new, size, "images", vmid)
                rest = ",".join(x for x in v.split(",")[1:])
                conf[k] = new + ("," + rest if rest else "")
                task.log.append(f"map '{k}' to '{new}'")
            elif k.startswith("net") and k[3:].isdigit() and str(p.get("unique", "0")) == "1":
                model = v.split(",")[0].split("=")[0]
                conf[k] = ",".join([f"{model}={random_mac(c.rng)}"] + v.split(",")[1:])
            else:
                conf[k] = v
        vm["config"] = conf

    def rollback() -> None:
        if old is not None:
            c.vms[vmid] = old
        else:
            c.vms.pop(vmid, None)

    return ctx.sim.tasks.start(node, "qmrestore", vmid, ctx.user, work, rollback,
                               log=[f"restore vma archive: {archive}"]).upid


def linked_clone_of(c: Any, volid: str) -> int | None:
    """A VM whose disk is a linked clone of base volume ``volid`` (None: none, or not a base)."""
    sid, _, name = volid.partition(":")
    base = name.split("/")[-1]
    if not base.startswith("base-"):
        return None
    for vm in c.vms.values():
        for _, v in c.vm_disks(vm["config"]):
            vsid, _, vname = v.partition(":")
            if vsid == sid and v != volid and f"{base}/" in vname:
                return int(vm["vmid"])
    return None


@route("DELETE", V)
def destroy_vm(ctx: Ctx, p: dict[str, Any]) -> str:
    c = ctx.cluster
    vm = vm_of(ctx, p)
    vmid = vm["vmid"]
    if vm["config"].get("protection") == "1":
        raise PVEError(f"can't remove VM {vmid} - protection mode enabled")
    if vm["status"] == "running":
        raise PVEError(f"VM {vmid} is running - destroy failed")

    def work(task: Task) -> None:
        if vm["status"] == "running":
            raise TaskError(f"VM {vmid} is running - destroy failed")
        for _, volid in c.vm_disks(vm["config"]):
            user = linked_clone_of(c, volid)
            if user is not None:  # PVE::Storage::vdisk_free on a base volume
                raise TaskError(f"base volume '{volid}' is still in use by linked cloned "
                                f"(VM {user})")
        for key, volid in c.vm_disks(vm["config"]):
            if key.startswith("unused") and str(p.get("destroy-unreferenced-disks", "1")) == "0":
                continue
            c.remove_volume(vm["node"], volid)
            task.log.append(f"  Logical volume \"{volid.split(':', 1)[1]}\" successfully removed.")
        for snap in vm["snapshots"].values():
            for _, volid in c.vm_disks(snap["config"]):
                c.remove_volume(vm["node"], volid)
        c.vms.pop(vmid, None)

    return vm_task(ctx, vm, "qmdestroy", "destroyed", work, p)


# --- config --------------------------------------------------------------------------------

@route("GET", V + "/config")
def get_config(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    if p.get("snapshot"):
        snap = vm["snapshots"].get(p["snapshot"])
        if snap is None:
            raise PVEError(f"snapshot '{p['snapshot']}' does not exist")
        return render_config(snap["config"])
    conf = dict(vm["config"])
    if str(p.get("current", "0")) != "1":
        conf.update(vm["pending"])
        for k in vm["pending_delete"]:
            conf.pop(k, None)
    out = render_config(conf)
    out["digest"] = ctx.cluster.digest(vm)
    return out


@route("GET", V + "/pending")
def get_pending(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    vm = vm_of(ctx, p)
    conf, pend = render_config(vm["config"]), render_config(vm["pending"])
    out = []
    for k in sorted(set(conf) | set(pend)):
        e: dict[str, Any] = {"key": k}
        if k in conf:
            e["value"] = conf[k]
        if k in pend:
            e["pending"] = pend[k]
        if k in vm["pending_delete"]:
            e["delete"] = 1
        out.append(e)
    return out


def _update(ctx: Ctx, p: dict[str, Any]) -> tuple[dict[str, Any], ConfigChange]:
    vm = vm_of(ctx, p)
    if not any(k not in ("node", "vmid", "digest", "skiplock", "background_delay")
               for k in p):
        raise PVEError("no options specified")
    return vm, ConfigChange(ctx.cluster, vm, p)


@route("PUT", V + "/config")
def put_config(ctx: Ctx, p: dict[str, Any]) -> None:
    vm = vm_of(ctx, p)
    sync_write_guard(ctx, vm, p)
    check_digest(vm, p, ctx)
    _, change = _update(ctx, p)
    change.commit()
    return None


@route("POST", V + "/config")
def post_config(ctx: Ctx, p: dict[str, Any]) -> str:
    vm, change = _update(ctx, p)

    def work(task: Task) -> None:
        check_digest(vm, p, ctx)
        fresh = ConfigChange(ctx.cluster, vm, p)  # recompute on the state at run time
        fresh.commit()
        task.log.extend(fresh.log)

    return vm_task(ctx, vm, "qmconfig", None, work, p,
                   duration=3 if change.new_volumes else 0.5)


@route("PUT", V + "/resize")
def resize(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    disk, sizestr = p["disk"], p["size"]

    def work(task: Task) -> None:
        conf = vm["config"]
        if p.get("digest") and p["digest"] != ctx.cluster.digest(vm):
            raise TaskError("checksum mismatch (file change by other user?)")
        if disk not in conf:
            raise TaskError(f"disk '{disk}' does not exist")
        value = conf[disk]
        volid = drive_file(value)
        if is_cdrom(value) or is_cloudinit(value):
            raise TaskError("you can't resize a cdrom")
        vol = ctx.cluster.volume(volid, vm["node"])
        size = vol["size"] if vol else parse_size(drive_opt(value, "size") or "0")
        plus = sizestr.startswith("+")
        new = parse_size(sizestr.lstrip("+")) + (size if plus else 0)
        if new < size:
            raise TaskError("shrinking disks is not supported")
        if new == size:
            return
        task.log.append(f"  Size of logical volume changed from {format_size(size)} to "
                        f"{format_size(new)}.")
        if vol:
            vol.setdefault("written", size)  # thin pools: a resize writes no data
            vol["size"] = new
        conf[disk] = set_drive_opt(value, "size", format_size(new))

    return vm_task(ctx, vm, "resize", None, work, p)


@route("POST", V + "/template")
def make_template(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    sync_write_guard(ctx, vm, p)
    if vm["status"] == "running":
        raise PVEError("you can't convert a VM to template if VM is running")
    if vm["config"].get("template") == "1":
        raise PVEError("you can't convert a template to a template")

    def work(task: Task) -> None:
        c = ctx.cluster
        for key, volid in c.vm_disks(vm["config"]):
            if key.startswith("unused") or is_cloudinit(vm["config"][key]):
                continue
            newid = volid.replace(f"vm-{vm['vmid']}-disk", f"base-{vm['vmid']}-disk")
            vol = c.volume(volid, vm["node"])
            if vol and newid != volid:
                c.remove_volume(vm["node"], volid)
                c.add_volume(vm["node"], newid, vol["size"], "images", vm["vmid"])
                vm["config"][key] = vm["config"][key].replace(volid, newid, 1)
        vm["config"]["template"] = "1"

    return vm_task(ctx, vm, "qmtemplate", None, work, p)
