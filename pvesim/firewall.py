"""Per-VM firewall (options, rules, ipsets) and cloud-init endpoints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .fwrules import verify_rule
from .model import PVEError
from .qemu import V, check_lock, vm_of
from .routes import Ctx, route
from .schema import ParamError
from .vmconfig import cloudinit_pending, dump_network, metadata, userdata

FW = V + "/firewall"
INT_OPTS = {"enable", "dhcp", "ipfilter", "macfilter", "ndp", "radv"}
RULE_KEYS = ("type", "action", "enable", "source", "dest", "proto", "dport", "sport",
             "comment", "macro", "iface", "log", "icmp-type")


def _fw(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    return vm_of(ctx, p)["firewall"]


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _check_digest(p: dict[str, Any], current: str) -> None:
    if p.get("digest") and p["digest"] != current:
        raise PVEError("detected modified configuration - file changed by other user? "
                       "Try again.")


@route("GET", FW)
def fw_dir(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, str]]:
    vm_of(ctx, p)
    return [{"name": n} for n in ("rules", "aliases", "ipset", "options", "log", "refs")]


@route("GET", FW + "/options")
def fw_options(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    fw = _fw(ctx, p)
    out = {k: (int(v) if k in INT_OPTS else v) for k, v in fw["options"].items()}
    out["digest"] = _digest(fw["options"])
    return out


@route("PUT", FW + "/options")
def fw_set_options(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    _check_digest(p, _digest(fw["options"]))
    opts = dict(fw["options"])
    for k in [d for d in str(p.get("delete", "")).replace(";", ",").split(",") if d]:
        opts.pop(k, None)
    for k, v in p.items():
        if k not in ("node", "vmid", "digest", "delete"):
            opts[k] = str(int(v)) if isinstance(v, bool) else str(v)
    fw["options"] = opts


def _rule_out(rule: dict[str, Any], pos: int) -> dict[str, Any]:
    d: dict[str, Any] = {"pos": pos}
    for k, v in rule.items():
        d[k] = int(v) if k in ("enable", "log") and str(v).isdigit() else v
    d.setdefault("ipversion", 4) if rule.get("source") or rule.get("dest") else None
    return d


@route("GET", FW + "/rules")
def fw_rules(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    rules = _fw(ctx, p)["rules"]
    return [_rule_out(r, i) for i, r in enumerate(rules)]


@route("POST", FW + "/rules")
def fw_add_rule(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    _check_digest(p, _digest(fw["rules"]))
    rule = {k: str(p[k]) for k in RULE_KEYS if k in p}
    _verify(fw, rule)
    pos = int(p.get("pos", 0))
    fw["rules"].insert(max(0, min(pos, len(fw["rules"]))), rule)


def _verify(fw: dict[str, Any], rule: dict[str, str]) -> None:
    """pve-firewall's verify_rule: a rule PVE would refuse is a 400 naming the parameter."""
    errors = verify_rule(rule, set(fw["ipsets"]))
    if errors:
        raise ParamError(errors)


def _rule_pos(fw: dict[str, Any], p: dict[str, Any]) -> int:
    pos = int(p["pos"])
    if pos >= len(fw["rules"]) or pos < 0:
        raise PVEError(f"no rule at position {pos}")
    return pos


@route("GET", FW + "/rules/{pos}")
def fw_get_rule(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    fw = _fw(ctx, p)
    pos = _rule_pos(fw, p)
    return _rule_out(fw["rules"][pos], pos)


@route("PUT", FW + "/rules/{pos}")
def fw_update_rule(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    pos = _rule_pos(fw, p)
    _check_digest(p, _digest(fw["rules"]))
    rule = dict(fw["rules"][pos])
    for k in [d for d in str(p.get("delete", "")).split(",") if d]:
        rule.pop(k, None)
    rule.update({k: str(p[k]) for k in RULE_KEYS if k in p})
    _verify(fw, rule)
    fw["rules"][pos] = rule
    if "moveto" in p:
        fw["rules"].pop(pos)
        fw["rules"].insert(int(p["moveto"]), rule)


@route("DELETE", FW + "/rules/{pos}")
def fw_delete_rule(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    pos = _rule_pos(fw, p)
    _check_digest(p, _digest(fw["rules"]))
    fw["rules"].pop(pos)


def _ipset(fw: dict[str, Any], name: str) -> dict[str, Any]:
    s = fw["ipsets"].get(name)
    if s is None:
        raise PVEError(f"no such IPSet '{name}'")
    return s


@route("GET", FW + "/ipset")
def fw_ipsets(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    fw = _fw(ctx, p)
    out = []
    for name, s in sorted(fw["ipsets"].items()):
        d = {"name": name, "digest": _digest(fw["ipsets"])}
        if s.get("comment"):
            d["comment"] = s["comment"]
        out.append(d)
    return out


@route("POST", FW + "/ipset")
def fw_create_ipset(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    name = p["name"]
    if p.get("rename"):
        s = _ipset(fw, p["rename"])
        if name in fw["ipsets"] and name != p["rename"]:
            raise PVEError(f"IPSet '{name}' already exists")
        fw["ipsets"][name] = fw["ipsets"].pop(p["rename"])
        if "comment" in p:
            s["comment"] = p["comment"]
        return
    if name in fw["ipsets"]:
        raise PVEError(f"IPSet '{name}' already exists")
    fw["ipsets"][name] = {"comment": p.get("comment", ""), "entries": []}


@route("GET", FW + "/ipset/{name}")
def fw_ipset_entries(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    s = _ipset(_fw(ctx, p), p["name"])
    digest = _digest(s)
    return [{**e, "digest": digest} for e in s["entries"]]


@route("POST", FW + "/ipset/{name}")
def fw_ipset_add(ctx: Ctx, p: dict[str, Any]) -> None:
    s = _ipset(_fw(ctx, p), p["name"])
    cidr = p["cidr"]
    if any(e["cidr"] == cidr for e in s["entries"]):
        raise PVEError(f"address '{cidr}' already exists")
    e: dict[str, Any] = {"cidr": cidr}
    if p.get("comment"):
        e["comment"] = p["comment"]
    if str(p.get("nomatch", "0")) == "1":
        e["nomatch"] = 1
    s["entries"].append(e)


@route("DELETE", FW + "/ipset/{name}")
def fw_delete_ipset(ctx: Ctx, p: dict[str, Any]) -> None:
    fw = _fw(ctx, p)
    s = _ipset(fw, p["name"])
    if s["entries"] and str(p.get("force", "0")) != "1":
        raise PVEError(f"IPSet '{p['name']}' is not empty")
    del fw["ipsets"][p["name"]]


@route("GET", FW + "/ipset/{name}/{cidr}")
def fw_ipset_get(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    s = _ipset(_fw(ctx, p), p["name"])
    for e in s["entries"]:
        if e["cidr"] == p["cidr"]:
            return e
    raise PVEError(f"no such IP/Network '{p['cidr']}'")


@route("DELETE", FW + "/ipset/{name}/{cidr}")
def fw_ipset_remove(ctx: Ctx, p: dict[str, Any]) -> None:
    s = _ipset(_fw(ctx, p), p["name"])
    before = len(s["entries"])
    s["entries"] = [e for e in s["entries"] if e["cidr"] != p["cidr"]]
    if len(s["entries"]) == before:
        raise PVEError(f"no such IP/Network '{p['cidr']}'")


# --- cloud-init ----------------------------------------------------------------------------

@route("GET", V + "/cloudinit")
def ci_pending(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    return cloudinit_pending(vm_of(ctx, p))


@route("PUT", V + "/cloudinit")
def ci_update(ctx: Ctx, p: dict[str, Any]) -> None:
    vm = vm_of(ctx, p)
    check_lock(vm, p)
    from .vmconfig import ci_values

    vm["ci_applied"] = ci_values(vm["config"])


@route("GET", V + "/cloudinit/dump")
def ci_dump(ctx: Ctx, p: dict[str, Any]) -> str:
    vm = vm_of(ctx, p)
    conf = vm["config"]
    t = p["type"]
    if t == "user":
        return userdata(conf, vm["vmid"])
    if t == "network":
        return dump_network(conf)
    return metadata(conf, vm["vmid"])
