"""Cluster, node, storage, task and vzdump endpoints."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from .model import DEFAULT_NODE, GiB, PVEError
from .qemu import lock_timeout_msg, vm_summary
from .routes import Ctx, route
from .schema import ParamError
from .tasks import Task, TaskError

HIDDEN_VOLUME_KEYS = {"config"}


@route("GET", "/version")
def version(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    return {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}


@route("GET", "/cluster/nextid")
def nextid(ctx: Ctx, p: dict[str, Any]) -> int:
    if p.get("vmid") is not None:
        vmid = int(p["vmid"])
        if vmid in ctx.cluster.vms:
            raise ParamError({"vmid": f"VM {vmid} already exists"})
        return vmid
    return ctx.cluster.next_vmid()


def _node_entry(ctx: Ctx, node: str) -> dict[str, Any]:
    online = node not in ctx.sim.faults.down_nodes
    d: dict[str, Any] = {"id": f"node/{node}", "type": "node", "node": node,
                         "status": "online" if online else "offline", "level": ""}
    if online:
        hw = ctx.cluster.hardware.get(node, DEFAULT_NODE)
        mem, cpu = ctx.cluster.node_load(node)  # moves as guests start and stop
        d.update({"cpu": cpu, "maxcpu": hw["maxcpu"], "mem": mem, "maxmem": hw["maxmem"],
                  "disk": 8 * GiB, "maxdisk": 100 * GiB,
                  "uptime": int(time.time() - ctx.cluster.boot), "cgroup-mode": 2})
    return d


def _storage_entry(ctx: Ctx, storeid: str, node: str) -> dict[str, Any]:
    s = ctx.cluster.storages[storeid]
    used = ctx.cluster.storage_used(storeid, node)
    return {"id": f"storage/{node}/{storeid}", "type": "storage", "node": node,
            "storage": storeid, "status": "available", "content": ",".join(s["content"]),
            "plugintype": s["type"], "shared": s["shared"], "disk": used,
            "maxdisk": s["total"]}


@route("GET", "/cluster/resources")
def resources(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    t = p.get("type")
    out: list[dict[str, Any]] = []
    if t in (None, "vm"):
        for vm in ctx.cluster.vms.values():
            d = vm_summary(ctx, vm)
            d.update({"id": f"qemu/{vm['vmid']}", "type": "qemu", "node": vm["node"],
                      "maxcpu": d.pop("cpus")})
            d.pop("pid", None)
            d.setdefault("template", 0)
            out.append(d)
    if t in (None, "node"):
        out.extend(_node_entry(ctx, n) for n in ctx.cluster.nodes)
    if t in (None, "storage"):
        for sid in ctx.cluster.storages:
            out.extend(_storage_entry(ctx, sid, n) for n in ctx.cluster.nodes)
    return out


@route("GET", "/cluster/tasks")
def cluster_tasks(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    tasks = sorted(ctx.sim.tasks.tasks.values(), key=lambda t: t.starttime, reverse=True)
    return [t.list_dict() for t in tasks[:1000]]


@route("GET", "/nodes")
def nodes(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n in ctx.cluster.nodes:
        d = _node_entry(ctx, n)
        d.pop("cgroup-mode", None)
        d["ssl_fingerprint"] = ctx.sim.fingerprint
        out.append(d)
    return out


@route("GET", "/nodes/{node}")
def node_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": n} for n in ("qemu", "storage", "tasks", "status", "vzdump")]


@route("GET", "/nodes/{node}/status")
def node_status(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    up = int(time.time() - ctx.cluster.boot)
    hw = ctx.cluster.hardware.get(p["node"], DEFAULT_NODE)
    mem, cpu = ctx.cluster.node_load(p["node"])
    return {
        "uptime": up, "cpu": cpu, "wait": 0.0, "loadavg": ["0.12", "0.20", "0.18"],
        "kversion": "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9",
        "pveversion": "pve-manager/8.4.1/2a5fa54a8503f96d",
        "cpuinfo": {"cpus": hw["maxcpu"], "cores": max(hw["maxcpu"] // 2, 1), "sockets": 1,
                    "model": "pvesim virtual CPU", "mhz": "3000.000", "hvm": "1", "flags": "",
                    "user_hz": 100},
        "memory": {"total": hw["maxmem"], "used": mem, "free": hw["maxmem"] - mem},
        "swap": {"total": 8 * GiB, "used": 0, "free": 8 * GiB},
        "rootfs": {"total": 100 * GiB, "used": 8 * GiB, "free": 92 * GiB, "avail": 92 * GiB},
        "ksm": {"shared": 0}, "idle": 0,
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "machine": "x86_64",
                           "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9"},
    }


# --- tasks ---------------------------------------------------------------------------------

def _task(ctx: Ctx, p: dict[str, Any]) -> Task:
    upid = p["upid"]
    if not re.match(r"^UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:]+:[^:]*:[^:]+:$",
                    upid):
        raise ParamError({"upid": "unable to parse worker upid"})
    t = ctx.sim.tasks.tasks.get(upid)
    if t is None:
        raise ParamError({"upid": "no such task"})
    window = ctx.sim.faults.status_400_after_dispatch / 1000.0
    if window and time.monotonic() - t.dispatched < window:
        raise ParamError({"upid": "no such task"})
    return t


@route("GET", "/nodes/{node}/tasks")
def node_tasks(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    ts = [t for t in ctx.sim.tasks.tasks.values() if t.node == p["node"]]
    if p.get("vmid"):
        ts = [t for t in ts if t.id == str(p["vmid"])]
    if p.get("typefilter"):
        ts = [t for t in ts if t.type == p["typefilter"]]
    if p.get("source") == "active":
        ts = [t for t in ts if t.status == "running"]
    ts.sort(key=lambda t: t.starttime, reverse=True)
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return [t.list_dict() for t in ts[start:start + limit]]


@route("GET", "/nodes/{node}/tasks/{upid}")
def task_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    _task(ctx, p)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    return _task(ctx, p).status_dict()


@route("GET", "/nodes/{node}/tasks/{upid}/log")
def task_log(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    t = _task(ctx, p)
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    lines = t.log if t.status == "stopped" else [x for x in t.log if not x.startswith("TASK ")]
    return [{"n": i + 1, "t": line} for i, line in enumerate(lines)][start:start + limit]


@route("DELETE", "/nodes/{node}/tasks/{upid}")
def task_stop(ctx: Ctx, p: dict[str, Any]) -> None:
    t = _task(ctx, p)
    if t.status == "running":
        t.work = None
        t.due = 0
    return None


# --- storage -------------------------------------------------------------------------------

def _storages_on(ctx: Ctx, node: str) -> list[str]:
    return list(ctx.cluster.storages)


@route("GET", "/nodes/{node}/storage")
def node_storage(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    want = set((p.get("content") or "").split(",")) - {""}
    for sid in _storages_on(ctx, p["node"]):
        if p.get("storage") and p["storage"] != sid:
            continue
        s = ctx.cluster.storages[sid]
        if want and not want & set(s["content"]):
            continue
        used = ctx.cluster.storage_used(sid, p["node"])
        out.append({"storage": sid, "type": s["type"], "content": ",".join(s["content"]),
                    "shared": s["shared"], "active": 1, "enabled": 1, "total": s["total"],
                    "used": used, "avail": s["total"] - used,
                    "used_fraction": used / s["total"]})
    return out


def _storage_cfg(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = ctx.cluster.storages.get(sid)
    if s is None:
        raise PVEError(f"storage '{sid}' does not exist")
    return s


@route("GET", "/nodes/{node}/storage/{storage}")
def storage_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    _storage_cfg(ctx, p["storage"])
    return [{"subdir": s} for s in ("content", "status")]


@route("GET", "/nodes/{node}/storage/{storage}/status")
def storage_status(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    s = _storage_cfg(ctx, p["storage"])
    used = ctx.cluster.storage_used(p["storage"], p["node"])
    return {"type": s["type"], "content": ",".join(s["content"]), "shared": s["shared"],
            "active": 1, "enabled": 1, "total": s["total"], "used": used,
            "avail": s["total"] - used}


def _public(vol: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in vol.items() if k not in HIDDEN_VOLUME_KEYS}


@route("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    _storage_cfg(ctx, p["storage"])
    vols = ctx.cluster.storage_volumes(p["storage"], p["node"])
    if p.get("content"):
        vols = [v for v in vols if v["content"] == p["content"]]
    if p.get("vmid"):
        vols = [v for v in vols if v.get("vmid") == int(p["vmid"])]
    return [_public(v) for v in sorted(vols, key=lambda v: v["volid"])]


def _volid(p: dict[str, Any]) -> str:
    vol = p["volume"]
    return vol if ":" in vol else f"{p['storage']}:{vol}"


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
def storage_volume(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    volid = _volid(p)
    vol = ctx.cluster.volume(volid, p["node"])
    if vol is None:
        raise PVEError(f"volume '{volid}' does not exist")
    d = _public(vol)
    d["path"] = f"/mnt/pve/{volid.replace(':', '/')}"
    return d


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
def storage_delete(ctx: Ctx, p: dict[str, Any]) -> str:
    volid = _volid(p)
    node = p["node"]
    if ctx.cluster.volume(volid, node) is None:
        raise PVEError(f"volume '{volid}' does not exist")
    for vm in ctx.cluster.vms.values():
        for _, v in ctx.cluster.vm_disks(vm["config"]):
            if v == volid:
                raise PVEError(f"unable to delete volume '{volid}' - still in use by VM "
                               f"{vm['vmid']}")

    vol = ctx.cluster.volume(volid, node) or {}
    storeid, volname = volid.split(":", 1)

    def work(task: Task) -> None:
        if vol.get("protected"):  # PBS forget / Plugin.pm free_image refuse it
            raise TaskError("cannot remove protected snapshot"
                            if ctx.cluster.storages[storeid]["type"] == "pbs" else
                            f"cannot remove protected volume '{volname}' on '{storeid}'")
        ctx.cluster.remove_volume(node, volid)
        task.log.append(f"Removed volume '{volid}'")

    # API2/Storage/Content.pm delete: the worker's id is "<owner vmid>@<storage>"
    owner = f"{vol['vmid']}@" if vol.get("vmid") is not None else ""
    return ctx.sim.tasks.start(node, "imgdel", f"{owner}{storeid}", ctx.user, work).upid


@route("PUT", "/nodes/{node}/storage/{storage}/content/{volume}")
def storage_volume_update(ctx: Ctx, p: dict[str, Any]) -> None:
    """Content.pm updateattributes: ``notes`` and ``protected`` (backups only), synchronous."""
    volid = _volid(p)
    vol = ctx.cluster.volume(volid, p["node"])
    if vol is None:
        raise PVEError(f"volume '{volid}' does not exist")
    if "protected" in p:
        if vol["content"] != "backup":
            raise PVEError("protection status is only supported for backups")
        if str(p["protected"]) in ("1", "true"):
            vol["protected"] = 1
        else:
            vol.pop("protected", None)
    if "notes" in p:
        vol["notes"] = p["notes"]
    return None


# --- vzdump --------------------------------------------------------------------------------

#: vzdump's node-wide lock (PVE/VZDump.pm): one backup job per node at a time; another job
#: waits for it up to ``lockwait`` minutes (default 180, the API schema), logging
#: "trying to get global lock - waiting...".
VZDUMP_LOCK = "/var/run/vzdump.lock"
_EXT = {"zstd": ".vma.zst", "gzip": ".vma.gz", "lzo": ".vma.lzo", "0": ".vma", "1": ".vma.lzo"}


def _pbs_time(ctx: Ctx, storage: str, node: str, vmid: int, when: float) -> str:
    """A PBS snapshot's name is its backup time to the second: two never share one."""
    taken = {v["volid"] for v in ctx.cluster.storage_volumes(storage, node)}
    while True:
        name = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        if f"{storage}:backup/vm/{vmid}/{name}" not in taken:
            return name
        when += 1


def _notes(template: str, vm: dict[str, Any], node: str) -> str:
    subst = {"guestname": vm["config"].get("name", f"VM {vm['vmid']}"), "vmid": str(vm["vmid"]),
             "node": node, "cluster": "pvesim"}
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: subst.get(m.group(1), m.group(0)), template)
    return text.replace("\\n", "\n")


@route("POST", "/nodes/{node}/vzdump")
def vzdump(ctx: Ctx, p: dict[str, Any]) -> str:
    node = p["node"]
    if not p.get("vmid"):
        raise PVEError("no guests specified (use --vmid, --all, or --pool)")
    vmids = [int(x) for x in re.split(r"[,;\s]+", str(p["vmid"])) if x]
    storage = p.get("storage") or "local"
    s = _storage_cfg(ctx, storage)
    if "backup" not in s["content"]:
        raise PVEError(f"storage '{storage}' does not support backups")
    vms = []
    for vmid in vmids:
        vm = ctx.cluster.vms.get(vmid)
        if vm is None or vm["node"] != node:
            raise PVEError(f"Unable to find VM {vmid} on node '{node}'")
        vms.append(vm)
    compress = str(p.get("compress", "0"))
    when = time.time()
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(when))
    while any(v["volid"].startswith(f"{storage}:backup/vzdump-qemu-{vmids[0]}-{stamp}")
              for v in ctx.cluster.storage_volumes(storage, node)):
        when += 1  # a real vzdump takes seconds: two archives never share a timestamp
        stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(when))
    if len(vms) != 1:
        raise PVEError("pvesim: vzdump of several guests at once is not supported")
    vm = vms[0]
    vmid = vm["vmid"]
    pbs = s["type"] == "pbs"
    if pbs:  # PBSPlugin print_volid: a snapshot of group vm/<vmid> at the backup's UTC time
        volid = f"{storage}:backup/vm/{vmid}/{_pbs_time(ctx, storage, node, vmid, when)}"
    else:
        volid = f"{storage}:backup/vzdump-qemu-{vmid}-{stamp}{_EXT.get(compress, '.vma.zst')}"
    notes = _notes(p.get("notes-template", ""), vm, node) if p.get("notes-template") else None

    if ctx.sim.faults.roll(ctx.sim.faults.lock_timeout_rate):
        def timed_out(task: Task) -> None:
            raise TaskError(lock_timeout_msg(vmid))

        return ctx.sim.tasks.start(node, "vzdump", vmid, ctx.user, timed_out, duration=0.2).upid
    state: dict[str, str] = {}

    def unlock() -> None:
        if vm["config"].get("lock") == "backup":
            del vm["config"]["lock"]

    def begin(task: Task) -> float | None:  # the global lock is ours: the guest's lock next
        lock = vm["config"].get("lock")
        if lock:
            state["locked"] = lock
            return 1.0  # the job ends at the guest's error
        vm["config"]["lock"] = "backup"
        return None

    def work(task: Task) -> None:
        if "locked" in state:  # vzdump logs the per-guest error, ends with "job errors"
            task.log.append(f"ERROR: Backup of VM {vmid} failed - VM is locked "
                            f"({state['locked']})")
            raise TaskError("job errors")
        try:
            size = sum(ctx.cluster.volume(v, node)["size"] // 4
                       for _, v in ctx.cluster.vm_disks(vm["config"])
                       if ctx.cluster.volume(v, node)) or 1024**2
            extra: dict[str, Any] = {"config": copy.deepcopy(
                {k: v for k, v in vm["config"].items() if k != "lock"})}
            if notes is not None:
                extra["notes"] = notes
            if str(p.get("protected", "0")) == "1":
                extra["protected"] = 1
            fmt = "pbs-vm" if pbs else volid.split(".", 1)[1]
            ctx.cluster.add_volume(node, volid, size, "backup", vmid, fmt=fmt, subtype="qemu",
                                   **extra)
            task.log.append(f"INFO: creating vzdump archive '{volid}'")
            task.log.append(f"INFO: Finished Backup of VM {vmid}")
        finally:
            unlock()

    lockwait = p.get("lockwait")
    return ctx.sim.tasks.start_locked(
        VZDUMP_LOCK, 60.0 * int(lockwait if lockwait is not None else 180), node, "vzdump",
        vmid, ctx.user, begin, work, unlock,
        log=[f"INFO: starting new backup job: vzdump {vmid} --storage {storage} "
             f"--mode {p.get('mode', 'snapshot')}"]).upid
