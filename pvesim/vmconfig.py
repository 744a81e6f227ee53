"""QEMU config editing: disk allocation, NICs, cloud-init, pending changes, typed output."""

from __future__ import annotations

import hashlib
import re
import secrets
import urllib.parse
from functools import cache
from typing import Any

from .model import (
    DRIVE_RE,
    UNUSED_RE,
    Cluster,
    PVEError,
    drive_file,
    format_size,
    is_cdrom,
    is_cloudinit,
    parse_size,
    random_mac,
    split_prop,
)
from .schema import ParamError, method_info

CONFIG_PATH = "/nodes/{node}/qemu/{vmid}/config"
NON_CONFIG = {"node", "vmid", "digest", "delete", "revert", "skiplock", "force",
              "background_delay", "archive", "storage", "start", "unique", "pool",
              "live-restore", "bwlimit", "current", "snapshot"}
HOTPLUG_RE = re.compile(r"^(net\d+|unused\d+|name|description|tags|onboot|protection|ciuser|"
                        r"cipassword|citype|ciupgrade|ipconfig\d+|nameserver|searchdomain|"
                        r"sshkeys|startup|lock)$")
CI_KEYS_RE = re.compile(r"^(ciuser|cipassword|citype|ciupgrade|ipconfig\d+|nameserver|"
                        r"searchdomain|sshkeys|net\d+|name)$")
NEW_DISK_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)$", re.I)
CLOUDINIT_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):cloudinit$", re.I)


@cache
def _config_types() -> tuple[dict[str, str], list[tuple[re.Pattern[str], str]]]:
    props = method_info("POST", CONFIG_PATH)["parameters"]["properties"]  # type: ignore[index]
    plain, pats = {}, []
    for name, s in props.items():
        if name.endswith("[n]"):
            pats.append((re.compile(re.escape(name[:-3]) + r"\d+$"), s.get("type", "string")))
        else:
            plain[name] = s.get("type", "string")
    plain.update({"digest": "string", "lock": "string", "parent": "string"})
    return plain, pats


def typed(key: str, value: str) -> Any:
    """Render a config value with the JSON type PVE uses for it (ints for integer keys)."""
    plain, pats = _config_types()
    t = plain.get(key)
    if t is None:
        t = next((pt for rx, pt in pats if rx.match(key)), "string")
    if t in ("integer", "boolean"):
        try:
            return int(value)
        except ValueError:
            return value
    if t == "number":
        try:
            f = float(value)
            return int(f) if f.is_integer() else f
        except ValueError:
            return value
    return value


def render_config(conf: dict[str, str], mask: bool = True) -> dict[str, Any]:
    out = {}
    for k, v in conf.items():
        out[k] = "**********" if (mask and k == "cipassword") else typed(k, v)
    return out


def encrypt_pw(pw: str) -> str:
    """SHA-256 crypt like PVE::Tools::encrypt_pw ($5$)."""
    if re.match(r"^\$(?:[156]|2[ay])(\$.+){2}", pw):
        return pw
    salt = secrets.token_urlsafe(12)[:16].replace("-", ".").replace("_", "/")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # stdlib until 3.13

        return crypt.crypt(pw, f"$5${salt}$")
    except ImportError:  # pragma: no cover - fallback keeps the $5$ shape
        return f"$5${salt}${hashlib.sha256((salt + pw).encode()).hexdigest()[:43]}"


def windows_version(ostype: str | None) -> int:
    """PVE::QemuServer::Helpers::windows_version."""
    text = ostype or ""
    if text in ("wxp", "w2k3", "w2k"):
        return 5
    if text in ("w2k8", "wvista"):
        return 6
    m = re.fullmatch(r"win(\d+)", text)
    return int(m.group(1)) if m else 0


def validate_ssh_public_keys(raw: str) -> None:
    """PVE::Tools::validate_ssh_public_keys: every non-blank line must be a public key that
    ``ssh-keygen -l`` reads (here: its key data loads), else one error for the whole call."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    for line in raw.split("\n"):
        if not line.strip():
            continue
        words = line.split()
        at = next((i for i, w in enumerate(words) if re.fullmatch(
            r"ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-\S+@openssh\.com", w)), None)
        try:
            if at is None or at + 1 >= len(words):
                raise ValueError("no key")
            load_ssh_public_key(f"{words[at]} {words[at + 1]}".encode())
        except Exception:  # noqa: BLE001 - ssh-keygen's exit status: any failure is one error
            raise PVEError("SSH public key validation error") from None


def configdrive_metadata(conf: dict[str, str], uuid: str = "") -> dict[str, Any]:
    """Port of Cloudinit.pm's cloudbase_configdrive2_metadata (a Windows VM's meta_data.json):
    the password as stored (plain for a Windows ostype) and the keys."""
    meta: dict[str, Any] = {"uuid": uuid, "network_config": {"content_path": "/content/0000"}}
    if conf.get("cipassword"):
        meta["admin_pass"] = conf["cipassword"]
    if conf.get("sshkeys") is not None:
        keys = [k for k in urllib.parse.unquote(conf["sshkeys"]).split("\n") if k.strip()]
        meta["public_keys"] = {f"key-{i}": k for i, k in enumerate(keys)}
    return meta


def _render_drive(file: str, opts: list[tuple[str | None, str]], size: int | None) -> str:
    rest = {k: v for k, v in opts if k not in (None, "file", "volume", "size")}
    if size is not None:
        rest["size"] = format_size(size)
    return ",".join([file] + [f"{k}={rest[k]}" for k in sorted(rest)])


def _render_net(value: str, cluster: Cluster) -> str:
    model, mac, rest = None, None, {}
    for k, v in split_prop(value):
        if k is None or k == "model":
            model = v
        elif k == "macaddr":
            mac = v
        elif k in _net_models():
            model, mac = k, v
        else:
            rest[k] = v
    mac = (mac or random_mac(cluster.rng)).upper()
    return ",".join([f"{model}={mac}"] + [f"{k}={rest[k]}" for k in sorted(rest)])


@cache
def _net_models() -> frozenset[str]:
    fmt = method_info("POST", CONFIG_PATH)["parameters"]["properties"]["net[n]"]["format"]  # type: ignore[index]
    return frozenset(k for k, s in fmt.items() if s.get("keyAlias") == "model")


def _next_unused(conf: dict[str, str]) -> str:
    i = 0
    while f"unused{i}" in conf:
        i += 1
    return f"unused{i}"


class ConfigChange:
    """Computes a config update on copies; ``commit`` applies it (fail-before-mutate)."""

    def __init__(self, cluster: Cluster, vm: dict[str, Any], params: dict[str, Any],
                 running: bool | None = None):
        self.cluster, self.vm = cluster, vm
        self.node, self.vmid = vm["node"], vm["vmid"]
        self.conf = dict(vm["config"])
        self.pending = dict(vm["pending"])
        self.pending_delete = list(vm["pending_delete"])
        self.new_volumes: list[tuple[str, int, str]] = []
        self.free_volumes: list[str] = []
        self.log: list[str] = []
        running = vm["status"] == "running" if running is None else running
        if params.get("sshkeys") is not None:
            validate_ssh_public_keys(urllib.parse.unquote(str(params["sshkeys"])))
        # qemu-server hashes cipassword unless the VM's saved ostype is Windows (cloudbase-init
        # reads the password itself); an ostype sent in the same call is not saved yet
        self.windows = windows_version(vm["config"].get("ostype")) > 0
        deletes = [d for d in re.split(r"[,;\s]+", str(params.get("delete") or "")) if d]
        errors = {}
        for d in deletes:
            if d in params:
                errors[d] = "conflicting values for deletion and new value"
        if errors:
            raise ParamError(errors)
        for key in sorted(k for k in params if k not in NON_CONFIG):
            value = self._prepare(key, str(params[key]) if not isinstance(params[key], bool)
                                  else str(int(params[key])))
            if running and not HOTPLUG_RE.match(key) and not DRIVE_RE.match(key):
                self.pending[key] = value
                if key in self.pending_delete:
                    self.pending_delete.remove(key)
                self.log.append(f"update VM {self.vmid}: pending -{key} {value}")
            else:
                self._set(key, value)
        for key in deletes:
            if running and not HOTPLUG_RE.match(key) and not DRIVE_RE.match(key):
                if key in self.conf and key not in self.pending_delete:
                    self.pending_delete.append(key)
                self.pending.pop(key, None)
            else:
                self._delete(key)
        if "memory" in params or "balloon" in params:
            self._check_balloon(params)

    def _check_balloon(self, params: dict[str, Any]) -> None:
        """qemu-server's update_vm_api: the balloon target may not exceed the memory."""
        def current(value: Any) -> int:
            text = str(value or "")
            text = text.split("current=", 1)[1] if "current=" in text else text
            return int(text.split(",")[0] or 512)

        memory = current(params.get("memory") or self.pending.get("memory")
                         or self.conf.get("memory"))
        balloon = params.get("balloon", self.pending.get("balloon") or self.conf.get("balloon"))
        if balloon and int(balloon) > memory:
            raise PVEError("balloon value too large (must be smaller than assigned memory)")

    def _prepare(self, key: str, value: str) -> str:
        if DRIVE_RE.match(key):
            return self._prepare_drive(key, value)
        if re.match(r"^net\d+$", key):
            return _render_net(value, self.cluster)
        if key == "cipassword":
            return value if self.windows else encrypt_pw(value)
        return value

    def _prepare_drive(self, key: str, value: str) -> str:
        opts = split_prop(value)
        file = drive_file(value)
        media = dict((k, v) for k, v in opts if k).get("media")
        m = NEW_DISK_RE.match(file)
        ci = CLOUDINIT_RE.match(file)
        found = m or ci
        storeid: str = found.group(1) if found else ""
        if found:
            scfg = self.cluster.storages.get(storeid)
            if scfg is None:
                raise PVEError(f"storage '{storeid}' does not exist")
            if "images" not in scfg["content"]:
                raise PVEError(f"storage '{storeid}' does not support vm images")
        if ci:
            volid = self.cluster.cloudinit_volid(storeid, self.vmid)
            self.new_volumes.append((volid, 4 * 1024**2, "images"))
            return _render_drive(volid, [("media", "cdrom")], None)
        if m:
            size = int(float(m.group(2)) * 1024**3)
            fmt = dict((k, v) for k, v in opts if k).get("format")
            taken = {v for v, _, _ in self.new_volumes}
            volid = self.cluster.new_disk_volid(storeid, self.node, self.vmid, fmt, taken)
            self.new_volumes.append((volid, size, "images"))
            self.log.append(f"{key}: successfully created disk '{volid},size={format_size(size)}'")
            return _render_drive(volid, opts, size)
        if file in ("none", "cdrom") or media == "cdrom":
            if file not in ("none", "cdrom") and self.cluster.volume(file, self.node) is None:
                raise PVEError(f"volume '{file}' does not exist")
            return _render_drive(file, opts, None)
        vol = self.cluster.volume(file, self.node)
        if vol is None:
            raise PVEError(f"volume '{file}' does not exist")
        size_opt = dict((k, v) for k, v in opts if k).get("size")
        return _render_drive(file, opts, parse_size(size_opt) if size_opt else vol["size"])

    def _set(self, key: str, value: str) -> None:
        old = self.conf.get(key)
        if old is not None and DRIVE_RE.match(key) and not is_cdrom(old):
            old_file = drive_file(old)
            if old_file != drive_file(value) and old_file not in ("none", "cdrom"):
                if is_cloudinit(old):
                    self.free_volumes.append(old_file)
                else:
                    self.conf[_next_unused(self.conf)] = old_file
        self.conf[key] = value
        self.pending.pop(key, None)

    def _delete(self, key: str) -> None:
        old = self.conf.pop(key, None)
        self.pending.pop(key, None)
        if old is None:
            return
        if UNUSED_RE.match(key):
            self.free_volumes.append(old)
        elif DRIVE_RE.match(key) and not is_cdrom(old):
            f = drive_file(old)
            if is_cloudinit(old):
                self.free_volumes.append(f)
            elif f not in ("none", "cdrom"):
                self.conf[_next_unused(self.conf)] = f

    def commit(self) -> None:
        for volid, size, content in self.new_volumes:
            self.cluster.add_volume(self.node, volid, size, content, self.vmid)
        for volid in self.free_volumes:
            self.cluster.remove_volume(self.node, volid)
        self.vm["config"] = self.conf
        self.vm["pending"] = self.pending
        self.vm["pending_delete"] = self.pending_delete


def apply_pending(vm: dict[str, Any]) -> None:
    """Cold start: pending values become current."""
    vm["config"].update(vm["pending"])
    for k in vm["pending_delete"]:
        vm["config"].pop(k, None)
    vm["pending"], vm["pending_delete"] = {}, []


def ci_values(conf: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in conf.items() if CI_KEYS_RE.match(k)}


def cloudinit_pending(vm: dict[str, Any]) -> list[dict[str, Any]]:
    cur, applied = ci_values(vm["config"]), vm.get("ci_applied") or {}
    out = []
    for k in sorted(set(cur) | set(applied)):
        if k == "name":
            continue
        new, old = cur.get(k), applied.get(k)
        mask = (lambda x: "**********") if k == "cipassword" else (lambda x: x)
        e: dict[str, Any] = {"key": k}
        if old is not None:
            e["value"] = mask(old)
        if new is None:
            e["delete"] = 1
        elif new != old:
            e["pending"] = mask(new)
        out.append(e)
    return out


def _hostname_fqdn(conf: dict[str, str], vmid: int) -> tuple[str, str]:
    hostname = conf.get("name") or f"VM{vmid}"
    if "." in hostname:
        return hostname.split(".", 1)[0], hostname
    if conf.get("searchdomain"):
        return hostname, f"{hostname}.{conf['searchdomain']}"
    return hostname, hostname


def userdata(conf: dict[str, str], vmid: int) -> str:
    """Port of PVE::QemuServer::Cloudinit::cloudinit_userdata."""
    hostname, fqdn = _hostname_fqdn(conf, vmid)
    out = f"#cloud-config\nhostname: {hostname}\nmanage_etc_hosts: true\nfqdn: {fqdn}\n"
    user, pw = conf.get("ciuser"), conf.get("cipassword")
    if user is not None:
        out += f"user: {user}\n"
        if user == "root":
            out += "disable_root: False\n"
    if pw is not None:
        out += f"password: {pw}\n"
    if conf.get("sshkeys") is not None:
        keys = [k.strip() for k in urllib.parse.unquote(conf["sshkeys"]).split("\n")]
        out += "ssh_authorized_keys:\n" + "".join(f"  - {k}\n" for k in keys if k)
    out += "chpasswd:\n  expire: False\n"
    if user != "root":
        out += "users:\n  - default\n"
    if conf.get("ciupgrade", "1") != "0":
        out += "package_upgrade: true\n"
    return out


def _mask_to_netmask(bits: int) -> str:
    n = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def network_config(conf: dict[str, str]) -> str:
    """Port of nocloud_network (version 1)."""
    out = "version: 1\nconfig:\n"
    i = "    "
    for key in sorted(k for k in conf if re.match(r"^net\d+$", k)):
        n = key[3:]
        ipc = conf.get(f"ipconfig{n}")
        if not ipc:
            continue
        net = split_prop(conf[key])
        mac = next((v for k, v in net if k and ":" in v and len(v) == 17), "").lower()
        ip = dict((k, v) for k, v in split_prop(ipc) if k)
        out += f"{i}- type: physical\n{i}  name: eth{n}\n{i}  mac_address: '{mac}'\n"
        out += f"{i}  subnets:\n"
        j = i + "  "
        if "ip" in ip:
            if ip["ip"] == "dhcp":
                out += f"{j}- type: dhcp4\n"
            else:
                addr, _, bits = ip["ip"].partition("/")
                out += (f"{j}- type: static\n{j}  address: '{addr}'\n"
                        f"{j}  netmask: '{_mask_to_netmask(int(bits or 32))}'\n")
                if "gw" in ip:
                    out += f"{j}  gateway: '{ip['gw']}'\n"
        if "ip6" in ip:
            if ip["ip6"] == "dhcp":
                out += f"{j}- type: dhcp6\n"
            elif ip["ip6"] == "auto":
                out += f"{j}- type: ipv6_slaac\n"
            else:
                out += f"{j}- type: static6\n{j}  address: '{ip['ip6']}'\n"
                if "gw6" in ip:
                    out += f"{j}  gateway: '{ip['gw6']}'\n"
    ns = conf.get("nameserver", "").split()
    sd = conf.get("searchdomain", "").split()
    if ns or sd:
        out += f"{i}- type: nameserver\n"
        if ns:
            out += f"{i}  address:\n" + "".join(f"{i}  - '{x}'\n" for x in ns)
        if sd:
            out += f"{i}  search:\n" + "".join(f"{i}  - '{x}'\n" for x in sd)
    return out


def cloudinit_format(conf: dict[str, str]) -> str:
    """Cloudinit.pm's get_cloudinit_format: citype, else configdrive2 for a Windows ostype."""
    if conf.get("citype"):
        return conf["citype"]
    return "configdrive2" if windows_version(conf.get("ostype")) else "nocloud"


def configdrive2_network(conf: dict[str, str]) -> str:
    """Port of Cloudinit.pm's configdrive2_network (ENI, as ``cloudinit/dump`` shows it)."""
    out = "auto lo\niface lo inet loopback\n\n"
    ns, sd = conf.get("nameserver", "").split(), conf.get("searchdomain", "").split()
    if ns:
        out += f"        dns_nameservers {' '.join(ns)}\n"
    if sd:
        out += f"        dns_search {' '.join(sd)}\n"
    for key in sorted(k for k in conf if re.match(r"^net\d+$", k)):
        n = key[3:]
        if not conf.get(f"ipconfig{n}"):
            continue
        ip = dict((k, v) for k, v in split_prop(conf[f"ipconfig{n}"]) if k)
        out += f"auto eth{n}\n"
        if "ip" in ip:
            if ip["ip"] == "dhcp":
                out += f"iface eth{n} inet dhcp\n"
            else:
                addr, _, bits = ip["ip"].partition("/")
                out += (f"iface eth{n} inet static\n        address {addr}\n"
                        f"        netmask {_mask_to_netmask(int(bits or 32))}\n")
                if "gw" in ip:
                    out += f"        gateway {ip['gw']}\n"
        if "ip6" in ip:
            if ip["ip6"] in ("auto", "dhcp"):
                out += f"iface eth{n} inet6 {ip['ip6']}\n"
            else:
                addr, _, bits = ip["ip6"].partition("/")
                out += f"iface eth{n} inet6 static\n        address {addr}\n"
                out += f"        netmask {bits}\n"
                if "gw6" in ip:
                    out += f"        gateway {ip['gw6']}\n"
    return out


def dump_network(conf: dict[str, str]) -> str:
    """``cloudinit/dump?type=network`` (dump_cloudinit_config): by the VM's format."""
    return network_config(conf) if cloudinit_format(conf) == "nocloud" \
        else configdrive2_network(conf)


def metadata(conf: dict[str, str], vmid: int) -> str:
    if cloudinit_format(conf) != "nocloud":  # configdrive2_gen_metadata
        digest = hashlib.sha1((userdata(conf, vmid) + configdrive2_network(conf)).encode())
        return (f'{{\n     "uuid": "{digest.hexdigest()}",\n     "network_config": '
                '{ "content_path": "/content/0000" }\n}\n')
    digest = hashlib.sha1((userdata(conf, vmid) + network_config(conf)).encode())
    return f"instance-id: {digest.hexdigest()}\n"
