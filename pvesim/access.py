"""Privileges and ACLs as PVE 8.4 computes them (pve-access-control, stable-bookworm):
``GET /access/permissions``, ``GET|PUT /access/acl`` (API-token entries).

root@pam holds every privilege everywhere; a token without privilege separation has its user's
privileges; a privilege-separated token holds what its own ACL entries grant (intersected with
its user's, which for root@pam is everything). An ACL entry on a path applies there and, with
``propagate``, below it; the deepest path with an entry for the token wins. pvesim does not
enforce privileges on other calls.
"""

from __future__ import annotations

from typing import Any

from .model import PVEError
from .routes import Ctx, route

#: PVE::AccessControl's privilege groups: category -> tier -> privileges
PRIVGROUPS: dict[str, dict[str, list[str]]] = {
    "VM": {"root": [], "admin": [
        "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
        "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.Migrate",
        "VM.Monitor", "VM.Snapshot", "VM.Snapshot.Rollback"],
        "user": ["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
                 "VM.PowerMgmt"],
        "audit": ["VM.Audit"]},
    "Sys": {"root": ["Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"],
            "admin": ["Sys.Console", "Sys.Syslog"], "user": [], "audit": ["Sys.Audit"]},
    "Datastore": {"root": [], "admin": ["Datastore.Allocate", "Datastore.AllocateTemplate"],
                  "user": ["Datastore.AllocateSpace"], "audit": ["Datastore.Audit"]},
    "SDN": {"root": [], "admin": ["SDN.Allocate", "SDN.Audit"], "user": ["SDN.Use"],
            "audit": ["SDN.Audit"]},
    "User": {"root": ["Realm.Allocate"],
             "admin": ["User.Modify", "Group.Allocate", "Realm.AllocateUser"], "user": [],
             "audit": []},
    "Pool": {"root": [], "admin": ["Pool.Allocate"], "user": ["Pool.Audit"],
             "audit": ["Pool.Audit"]},
    "Mapping": {"root": [], "admin": ["Mapping.Modify"], "user": ["Mapping.Use"],
                "audit": ["Mapping.Audit"]},
}


def _roles() -> dict[str, frozenset[str]]:
    every = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, tiers in PRIVGROUPS.items():
        every.update(p for tier in tiers.values() for p in tier)
        admin = set(tiers["admin"] + tiers["user"] + tiers["audit"])
        roles[f"PVE{cat}Admin"] = admin
        roles["PVEAdmin"] |= admin
        if tiers["user"]:
            roles[f"PVE{cat}User"] = set(tiers["user"] + tiers["audit"])
        roles["PVEAuditor"] |= set(tiers["audit"])
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = every
    return {name: frozenset(privs) for name, privs in roles.items()}


ROLES = _roles()
DEFAULT_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


def _ancestors(path: str) -> list[str]:
    """'/vms/100' -> ['/', '/vms', '/vms/100']."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def permissions(auth: Any, authid: str, path: str) -> dict[str, int]:
    """privilege -> propagate flag for ``authid`` (user or token) on ``path``."""
    user = authid.split("!", 1)[0]
    if user != "root@pam" and user not in auth.users:
        return {}
    if "!" in authid:
        if authid not in auth.tokens:
            return {}
        if auth.privsep.get(authid, 0):
            found: dict[str, int] = {}
            for p in _ancestors(path):
                entries = [(r, prop) for (ap, tok, r, prop) in auth.acl
                           if ap == p and tok == authid and (prop or p == path)]
                if entries:
                    found = {}
                    for role, prop in entries:
                        for priv in ROLES.get(role, ()):
                            found[priv] = max(found.get(priv, 0), prop)
            return found
    return dict.fromkeys(ROLES["Administrator"], 1)  # root@pam (only user pvesim has)


@route("GET", "/access/permissions")
def get_permissions(ctx: Ctx, p: dict[str, Any]) -> dict[str, dict[str, int]]:
    auth = ctx.sim.auth
    authid = p.get("userid") or ctx.user
    if p.get("path"):
        return {p["path"]: permissions(auth, authid, p["path"])}
    paths = set(DEFAULT_PATHS) | {ap for (ap, tok, _, _) in auth.acl if tok == authid}
    out = {path: permissions(auth, authid, path) for path in sorted(paths)}
    return {path: privs for path, privs in out.items() if privs}


@route("GET", "/access/acl")
def read_acl(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"path": ap, "type": "token", "ugid": tok, "roleid": role, "propagate": prop}
            for (ap, tok, role, prop) in ctx.sim.auth.acl]


@route("PUT", "/access/acl")
def update_acl(ctx: Ctx, p: dict[str, Any]) -> None:
    auth = ctx.sim.auth
    if p.get("users") or p.get("groups"):
        raise PVEError("pvesim: only API-token ACL entries are simulated", 501)
    roles = [r for r in str(p["roles"]).replace(";", ",").split(",") if r]
    tokens = [t for t in str(p.get("tokens") or "").replace(";", ",").split(",") if t]
    for role in roles:
        if role not in ROLES:
            raise PVEError(f"role '{role}' does not exist")
    for tok in tokens:
        if tok not in auth.tokens:
            raise PVEError(f"no such token '{tok}'")
    path = "/" + "/".join(x for x in str(p["path"]).split("/") if x)
    propagate = int(p.get("propagate", 1))
    for tok in tokens:
        for role in roles:
            auth.acl[:] = [e for e in auth.acl if e[:3] != (path, tok, role)]
            if not int(p.get("delete", 0)):
                auth.acl.append((path, tok, role, propagate))
