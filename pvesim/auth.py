"""Authentication: tickets (PVEAuthCookie + CSRFPreventionToken) and API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
import uuid
from typing import Any

from .model import PVEError
from .routes import Ctx, route

TICKET_LIFETIME = 7200


class AuthError(Exception):
    """401 with PVE's message ("No ticket", "Authentication failed!", ...)."""


class Auth:
    """Users (password), API tokens and HMAC-signed tickets."""

    def __init__(self, password: str | None = None, tokens: dict[str, str] | None = None,
                 key: bytes | None = None):
        self.key = key or secrets.token_bytes(32)
        self.users = {"root@pam": password or secrets.token_urlsafe(12)}
        self.tokens = dict(tokens or {"root@pam!pvekvm": str(uuid.uuid4())})
        #: token id -> 1 when privilege-separated (tokens made at start share root's privileges)
        self.privsep: dict[str, int] = {}
        #: ACL entries for tokens: (path, token id, role, propagate), see pvesim.access
        self.acl: list[tuple[str, str, str, int]] = []

    def _sig(self, text: str) -> str:
        mac = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode().rstrip("=")

    def make_ticket(self, user: str) -> tuple[str, str]:
        ts = f"{int(time.time()):08X}"
        plain = f"PVE:{user}:{ts}"
        return f"{plain}::{self._sig(plain)}", f"{ts}:{self._sig('csrf:' + user + ts)}"

    def verify_ticket(self, ticket: str) -> str:
        plain, sep, sig = ticket.rpartition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE":
            raise AuthError("Authentication failed!")
        if not hmac.compare_digest(sig, self._sig(plain)):
            raise AuthError("Authentication failed!")
        if time.time() - int(parts[2], 16) > TICKET_LIFETIME:
            raise AuthError("Authentication failed!")
        return parts[1]

    def verify_csrf(self, user: str, token: str | None) -> None:
        ts, _, sig = (token or "").partition(":")
        if not token or not hmac.compare_digest(sig, self._sig("csrf:" + user + ts)):
            raise AuthError("Permission denied - invalid csrf token")

    def verify_token(self, header: str) -> str:
        """``PVEAPIToken=user@realm!name=secret`` -> token id."""
        value = header.split("=", 1)[1] if "=" in header else ""
        tokenid, _, secret = value.partition("=")
        expected = self.tokens.get(tokenid)
        if expected is None or not hmac.compare_digest(expected, secret):
            raise AuthError("Authentication failed!")
        return tokenid

    def authenticate(self, method: str, path: str, headers: Any) -> str | None:
        """Return the user/token id, None for anonymous calls, or raise AuthError."""
        if path == "/access/ticket" and method in ("GET", "POST"):
            return None
        if path == "/access/domains" and method == "GET":
            return None
        authz = headers.get("Authorization") or ""
        if authz.startswith("PVEAPIToken"):
            return self.verify_token(authz)
        ticket = None
        for part in (headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "PVEAuthCookie":
                ticket = urllib.parse.unquote(v)
        if not ticket:
            raise AuthError("No ticket")
        user = self.verify_ticket(ticket)
        if method != "GET":
            self.verify_csrf(user, headers.get("CSRFPreventionToken"))
        return user


@route("GET", "/access/ticket")
def get_ticket(ctx: Ctx, p: dict[str, Any]) -> None:
    return None


@route("POST", "/access/ticket")
def create_ticket(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    auth: Auth = ctx.sim.auth
    user = p["username"]
    if "@" not in user and p.get("realm"):
        user = f"{user}@{p['realm']}"
    password = p["password"]
    ok = False
    if user in auth.users:
        if hmac.compare_digest(auth.users[user], password):
            ok = True
        elif password.startswith("PVE:"):
            try:
                ok = auth.verify_ticket(password) == user
            except AuthError:
                ok = False
    if not ok:
        raise PVEError("authentication failure", 401)
    ticket, csrf = auth.make_ticket(user)
    return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
            "clustername": "pvesim",
            "cap": {"vms": {"VM.Allocate": 1}, "storage": {"Datastore.Allocate": 1}}}


@route("GET", "/access/domains")
def domains(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
            {"realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server"}]


def _tokens_of(ctx: Ctx, userid: str) -> dict[str, str]:
    if userid not in ctx.sim.auth.users:
        raise PVEError(f"no such user ('{userid}')")
    return {k: v for k, v in ctx.sim.auth.tokens.items() if k.startswith(userid + "!")}


@route("GET", "/access/users/{userid}/token")
def token_index(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"tokenid": k.split("!", 1)[1], "privsep": ctx.sim.auth.privsep.get(k, 0),
             "expire": 0, "comment": ""} for k in _tokens_of(ctx, p["userid"])]


@route("GET", "/access/users/{userid}/token/{tokenid}")
def token_read(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    if f"{p['userid']}!{p['tokenid']}" not in _tokens_of(ctx, p["userid"]):
        raise PVEError(f"no such token '{p['tokenid']}' for user '{p['userid']}'")
    full = f"{p['userid']}!{p['tokenid']}"
    return {"privsep": ctx.sim.auth.privsep.get(full, 0), "expire": 0, "comment": ""}


@route("POST", "/access/users/{userid}/token/{tokenid}")
def token_generate(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    full = f"{p['userid']}!{p['tokenid']}"
    if full in _tokens_of(ctx, p["userid"]):
        raise PVEError("Token already exists.")
    value = str(uuid.uuid4())
    ctx.sim.auth.tokens[full] = value
    ctx.sim.auth.privsep[full] = int(p.get("privsep", 1))
    return {"full-tokenid": full, "value": value,
            "info": {"privsep": int(p.get("privsep", 1)), "expire": int(p.get("expire", 0))}}


@route("DELETE", "/access/users/{userid}/token/{tokenid}")
def token_remove(ctx: Ctx, p: dict[str, Any]) -> None:
    full = f"{p['userid']}!{p['tokenid']}"
    if full not in _tokens_of(ctx, p["userid"]):
        raise PVEError(f"no such token '{p['tokenid']}' for user '{p['userid']}'")
    del ctx.sim.auth.tokens[full]
    ctx.sim.auth.privsep.pop(full, None)
    ctx.sim.auth.acl[:] = [e for e in ctx.sim.auth.acl if e[1] != full]
