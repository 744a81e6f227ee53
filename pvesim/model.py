"""In-memory cluster state: nodes, storages, volumes, VMs; JSON persistence."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_NODES = ["pve1", "pve2", "pve3"]
GiB = 1024**3
#: a node's hardware: RAM, CPU threads, and what the host itself holds (kernel, pmxcfs,
#: pveproxy/pvedaemon/pvestatd, page tables): what PVE's ``mem`` shows with no guest running
DEFAULT_NODE = {"maxmem": 512 * GiB, "maxcpu": 64, "host_mem": 4 * GiB}  # a hosting node
#: what one running guest adds to its node's ``mem`` beyond its configured memory: the QEMU
#: process's own overhead (device emulation, VNC, I/O buffers)
QEMU_OVERHEAD = 48 * 1024**2

ISO_FILES = {
    "Debian-12.5.0-amd64-netinst.iso": 659554304,
    "Ubuntu-22.04.4-live-server-amd64.iso": 2104408064,
    "proxmox-ve_8.1-2.iso": 1336590336,
    "myfile.iso": 1048576,
    "systemrescue-11.02-amd64.iso": 1004535808,  # the rescue ISO of the tests' settings
}

DRIVE_RE = re.compile(r"^(ide[0-3]|sata[0-5]|scsi(?:[0-9]|[1-2][0-9]|30)|virtio(?:[0-9]|1[0-5])"
                      r"|efidisk0|tpmstate0)$")
UNUSED_RE = re.compile(r"^unused\d+$")


class PVEError(Exception):
    """A handler failure answered like PVE: status code + one-line message (default 500)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message, self.status = message, status


def storage_defs() -> dict[str, dict[str, Any]]:
    """Default storage.cfg of the simulated cluster."""
    return {
        "local": {"type": "dir", "content": ["iso", "vztmpl", "backup"], "shared": 0,
                  "path": "/var/lib/vz", "total": 100 * GiB},
        "local-lvm": {"type": "lvmthin", "content": ["images", "rootdir"], "shared": 0,
                      "total": 4096 * GiB},
        "nfs-shared": {"type": "nfs", "content": ["images", "iso"], "shared": 1,
                       "total": 4096 * GiB},
        "backup": {"type": "dir", "content": ["backup"], "shared": 1, "path": "/mnt/backup",
                   "total": 2048 * GiB},
        "iso": {"type": "dir", "content": ["iso"], "shared": 1, "path": "/mnt/iso",
                "total": 512 * GiB},
        # a Proxmox Backup Server datastore (pve-storage PBSPlugin.pm): archives are snapshots
        # named backup/vm/<vmid>/<UTC time>, in this storage's namespace
        "pbs": {"type": "pbs", "content": ["backup"], "shared": 1, "datastore": "store1",
                "server": "pbs.pvesim.example", "namespace": "pvekvm", "total": 8192 * GiB},
    }


TEMPLATES = [
    (9000, "debian-12-cloud", "pve1", "local-lvm", "ide2"),
    (9001, "ubuntu-2204-cloud", "pve1", "local-lvm", "ide2"),
    (9002, "almalinux-9-cloud", "pve1", "nfs-shared", "ide0"),
]
REPLICA_VMID_STEP = 10  # replica of template T on the i-th node (i >= 1): VMID T + 10 * i

#: Storage types whose base volumes PVE can clone linked (``volume_has_feature(..., 'clone')``:
#: LVM-thin, ZFS, Ceph RBD and the file plugins with raw/qcow2/vmdk bases). Plain LVM and iSCSI
#: cannot (nor can they hold a template).
#: thin-provisioned storage types: what they report used is the data written
THIN_TYPES = frozenset({"lvmthin", "zfspool", "rbd"})
LINKED_CLONE_TYPES = frozenset({"lvmthin", "zfspool", "rbd", "dir", "nfs", "cifs", "glusterfs",
                                "cephfs"})


def format_size(n: int) -> str:
    """PVE's drive ``size=`` rendering (largest exact unit)."""
    for unit, mult in (("T", 1024**4), ("G", GiB), ("M", 1024**2), ("K", 1024)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def parse_size(s: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", s)
    if not m:
        raise PVEError(f"unable to parse size '{s}'")
    mult = {"": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


def split_prop(value: str) -> list[tuple[str | None, str]]:
    """Split a property string into (key or None, value) pairs, keeping order."""
    out: list[tuple[str | None, str]] = []
    for part in value.split(","):
        if not part:
            continue
        k, sep, v = part.partition("=")
        out.append((k, v) if sep else (None, part))
    return out


def join_prop(pairs: list[tuple[str | None, str]]) -> str:
    return ",".join(v if k is None else f"{k}={v}" for k, v in pairs)


def drive_file(value: str) -> str:
    for k, v in split_prop(value):
        if k in (None, "file", "volume"):
            return v
    return ""


def drive_opt(value: str, key: str) -> str | None:
    for k, v in split_prop(value):
        if k == key:
            return v
    return None


def set_drive_opt(value: str, key: str, new: str) -> str:
    pairs = [(k, v) for k, v in split_prop(value) if k != key]
    pairs.append((key, new))
    return join_prop(pairs)


def is_cdrom(value: str) -> bool:
    return drive_opt(value, "media") == "cdrom" and "cloudinit" not in drive_file(value)


def is_cloudinit(value: str) -> bool:
    return "cloudinit" in drive_file(value)


def random_mac(rng: random.Random) -> str:
    return "BC:24:11:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


class Cluster:
    """The whole simulated cluster. Callers hold ``self.lock`` around reads and writes."""

    def __init__(self, nodes: list[str] | None = None, template_replicas: bool = False):
        self.template_replicas = template_replicas
        self.lock = threading.RLock()
        self.rng = random.Random()
        self.nodes = list(nodes or DEFAULT_NODES)
        self.hardware: dict[str, dict[str, int]] = {n: dict(DEFAULT_NODE) for n in self.nodes}
        self.storages = storage_defs()
        self.vms: dict[int, dict[str, Any]] = {}
        # volumes[scope][volid] where scope is a node name (local storage) or "shared"
        self.volumes: dict[str, dict[str, dict[str, Any]]] = {}
        self.boot = time.time() - 86400 * 3
        self.seed_defaults()

    # --- storage ---------------------------------------------------------------------------
    def scope(self, storeid: str, node: str) -> str:
        return "shared" if self.storages[storeid]["shared"] else node

    def volume(self, volid: str, node: str) -> dict[str, Any] | None:
        storeid = volid.split(":", 1)[0]
        if storeid not in self.storages:
            return None
        return self.volumes.get(self.scope(storeid, node), {}).get(volid)

    def add_volume(self, node: str, volid: str, size: int, content: str, vmid: int | None = None,
                   fmt: str = "raw", **extra: Any) -> dict[str, Any]:
        storeid = volid.split(":", 1)[0]
        vol = {"volid": volid, "size": size, "content": content, "format": fmt,
               "ctime": int(time.time()), **extra}
        if vmid is not None:
            vol["vmid"] = vmid
        self.volumes.setdefault(self.scope(storeid, node), {})[volid] = vol
        return vol

    def remove_volume(self, node: str, volid: str) -> None:
        storeid = volid.split(":", 1)[0]
        if storeid in self.storages:
            self.volumes.get(self.scope(storeid, node), {}).pop(volid, None)

    def storage_volumes(self, storeid: str, node: str) -> list[dict[str, Any]]:
        scope = self.scope(storeid, node)
        prefix = storeid + ":"
        return [v for k, v in self.volumes.get(scope, {}).items() if k.startswith(prefix)]

    def storage_used(self, storeid: str, node: str) -> int:
        """What the storage reports used: a thin pool (LVM-thin, ZFS, Ceph RBD) the data
        written (a resize writes nothing: ``written`` keeps the size before it), any other
        storage the volumes' sizes."""
        thin = self.storages[storeid]["type"] in THIN_TYPES
        return sum(v.get("written", v["size"]) if thin else v["size"]
                   for v in self.storage_volumes(storeid, node))

    def set_storage(self, storeid: str, total: int) -> None:
        """A storage grew or shrank (its ``total`` in bytes)."""
        if storeid not in self.storages or not isinstance(total, int) or total <= 0:
            raise ValueError(f"expected a storage of {', '.join(self.storages)} and total > 0")
        self.storages[storeid]["total"] = total

    def new_disk_volid(self, storeid: str, node: str, vmid: int, fmt: str | None = None,
                       taken: set[str] | None = None) -> str:
        scfg = self.storages[storeid]
        used = {v["volid"] for v in self.storage_volumes(storeid, node)} | (taken or set())
        for n in range(1000):
            if scfg["type"] in ("lvmthin", "lvm", "rbd", "zfspool"):
                volid = f"{storeid}:vm-{vmid}-disk-{n}"
            else:
                volid = f"{storeid}:{vmid}/vm-{vmid}-disk-{n}.{fmt or 'raw'}"
            if not any(u == volid or u.endswith("/" + volid.split(":", 1)[1]) for u in used):
                return volid
        raise PVEError(f"unable to allocate an image name for VM {vmid} in storage '{storeid}'")

    def cloudinit_volid(self, storeid: str, vmid: int) -> str:
        if self.storages[storeid]["type"] in ("lvmthin", "lvm", "rbd", "zfspool"):
            return f"{storeid}:vm-{vmid}-cloudinit"
        return f"{storeid}:{vmid}/vm-{vmid}-cloudinit.qcow2"

    # --- nodes -----------------------------------------------------------------------------
    def set_node(self, node: str, **hardware: int) -> dict[str, int]:
        """A node's hardware changed (``maxmem``, ``maxcpu``, ``host_mem``); a new name joins
        the cluster (``pvecm add``) with the local storages every node has."""
        if node not in self.nodes:
            self.nodes.append(node)
        hw = self.hardware.setdefault(node, dict(DEFAULT_NODE))
        for key, value in hardware.items():
            if key not in DEFAULT_NODE or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}: expected one of {', '.join(DEFAULT_NODE)} >= 0")
            hw[key] = value
        return dict(hw)

    def node_load(self, node: str) -> tuple[int, float]:
        """(``mem``, ``cpu``) as pvestatd reports them: ``mem`` is the host's used memory
        (PVE::ProcFSTools::read_meminfo: MemTotal - MemFree - Buffers - Cached), so a running
        guest counts with the memory its QEMU process holds — a booted Linux guest soon
        touches all it was given (page cache) — plus QEMU's overhead; a stopped one counts
        nothing. ``cpu`` is the busy fraction of the node's threads (an idle guest ~2 % of
        each vCPU)."""
        hw = self.hardware.get(node, DEFAULT_NODE)
        mem, busy = hw["host_mem"], 0.03 * hw["maxcpu"]
        for vm in self.vms.values():
            if vm["node"] == node and vm["status"] == "running":
                conf = vm["config"]
                mem += int(str(conf.get("memory", "512")).split(",")[0]) * 2**20 + QEMU_OVERHEAD
                busy += 0.02 * int(conf.get("cores", "1")) * int(conf.get("sockets", "1"))
        return min(mem, hw["maxmem"]), round(min(busy / max(hw["maxcpu"], 1), 1.0), 4)

    # --- VMs -------------------------------------------------------------------------------
    def new_vm(self, vmid: int, node: str, config: dict[str, str]) -> dict[str, Any]:
        vm = {"vmid": vmid, "node": node, "config": config, "pending": {},
              "pending_delete": [], "snapshots": {}, "status": "stopped",
              "qmpstatus": "stopped", "started": 0.0, "ci_applied": {},
              "firewall": {"options": {}, "rules": [], "ipsets": {}}}
        self.vms[vmid] = vm
        return vm

    def vm_on(self, node: str, vmid: int | str) -> dict[str, Any]:
        """load_config semantics: the VM must live on ``node``."""
        vm = self.vms.get(int(vmid))
        if vm is None or vm["node"] != node:
            raise PVEError(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' "
                           "does not exist")
        return vm

    def next_vmid(self) -> int:
        i = 100
        while i in self.vms:
            i += 1
        return i

    @staticmethod
    def digest(vm: dict[str, Any]) -> str:
        text = "".join(f"{k}: {v}\n" for k, v in vm["config"].items())
        text += "".join(f"[PENDING]{k}: {v}\n" for k, v in vm["pending"].items())
        text += "delete: " + ",".join(vm["pending_delete"]) + "\n"
        text += "".join(f"[{n}]" for n in vm["snapshots"])
        return hashlib.sha1(text.encode()).hexdigest()

    def vm_disks(self, config: dict[str, str]) -> list[tuple[str, str]]:
        """(key, volid) of non-cdrom drives and unused volumes (incl. cloud-init)."""
        out = []
        for k, v in config.items():
            if DRIVE_RE.match(k) and not is_cdrom(v):
                f = drive_file(v)
                if f and f != "none" and ":" in f:
                    out.append((k, f))
            elif UNUSED_RE.match(k):
                out.append((k, v))
        return out

    def root_disk_size(self, config: dict[str, str]) -> int:
        for k, v in config.items():
            if DRIVE_RE.match(k) and not is_cdrom(v) and not is_cloudinit(v):
                size = drive_opt(v, "size")
                return parse_size(size) if size else 0
        return 0

    # --- seed ------------------------------------------------------------------------------
    def template_copies(self) -> list[tuple[int, str, str, str, str]]:
        """(vmid, name, node, storage, cloud-init slot) of every seeded template: the defaults
        and, with ``template_replicas``, a copy of each local-storage template on every other
        node (an operator's per-node replicas; VMIDs are cluster-wide, so each has its own)."""
        out = list(TEMPLATES)
        if self.template_replicas:
            for i, other in enumerate(self.nodes):
                out += [(vmid + REPLICA_VMID_STEP * i, name, other, st, ci)
                        for vmid, name, node, st, ci in TEMPLATES
                        if other != node and not self.storages[st]["shared"]]
        return out

    def seed_defaults(self) -> None:
        for name, size in ISO_FILES.items():
            self.add_volume("", f"iso:iso/{name}", size, "iso", fmt="iso")
        for vmid, name, node, storeid, ci_slot in self.template_copies():
            base = (f"{storeid}:base-{vmid}-disk-0" if storeid == "local-lvm"
                    else f"{storeid}:{vmid}/base-{vmid}-disk-0.raw")
            ci = self.cloudinit_volid(storeid, vmid)
            self.add_volume(node, base, 2 * GiB, "images", vmid)
            self.add_volume(node, ci, 4 * 1024**2, "images", vmid)
            cfg = {
                "boot": "order=scsi0", "cores": "1", "memory": "2048", "name": name,
                "net0": f"virtio={random_mac(self.rng)},bridge=vmbr0",
                "ostype": "l26", "scsi0": f"{base},size=2G", "scsihw": "virtio-scsi-pci",
                ci_slot: f"{ci},media=cdrom", "serial0": "socket", "vga": "serial0",
                "smbios1": f"uuid={uuid.uuid4()}", "vmgenid": str(uuid.uuid4()),
                "template": "1", "agent": "1",
            }
            self.new_vm(vmid, node, cfg)

    # --- persistence -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "hardware": self.hardware, "storages": self.storages,
                "vms": {str(k): v for k, v in self.vms.items()}, "volumes": self.volumes}

    def load_json(self, data: dict[str, Any]) -> None:
        self.nodes = data["nodes"]
        self.hardware = {n: {**DEFAULT_NODE, **data.get("hardware", {}).get(n, {})}
                         for n in self.nodes}
        self.storages = data["storages"]
        self.vms = {int(k): v for k, v in data["vms"].items()}
        self.volumes = data["volumes"]
        for vm in self.vms.values():  # running guests do not survive a simulator restart
            vm.pop("lock_task", None)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with self.lock:
            tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)
