"""Bearer tokens: billing tokens (hashed in settings) and derived per-service client tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pvekvm.config import ApiSettings

CLIENT_PREFIX = "svc."


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``service_id`` None: any service (billing); else exactly that one."""

    name: str
    service_id: int | None = None

    def may_read(self, service_id: int) -> bool:
        return self.service_id is None or self.service_id == service_id


def hash_token(token: str) -> str:
    """What settings store for a billing token. Tokens are 256-bit random, so a plain SHA-256
    (no slow KDF) cannot be brute-forced."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def client_token(key: str, service_id: int) -> str:
    mac = hmac.new(key.encode(), f"pvekvm-api-client:{service_id}".encode(), hashlib.sha256)
    return f"{CLIENT_PREFIX}{service_id}.{base64.urlsafe_b64encode(mac.digest()).decode()[:43]}"


def authenticate(api: ApiSettings, token: str) -> Principal | None:
    """The principal ``token`` stands for, or None. Compares against every billing hash in
    constant time (no early exit, so timing says nothing about which one nearly matched)."""
    if token.startswith(CLIENT_PREFIX) and api.client_token_key:
        sid_text = token[len(CLIENT_PREFIX):].split(".", 1)[0]
        if sid_text.isdigit() and len(sid_text) <= 10:
            expected = client_token(api.client_token_key, int(sid_text))
            if hmac.compare_digest(expected.encode(), token.encode()):
                return Principal(f"client:{int(sid_text)}", int(sid_text))
        return None
    presented = hash_token(token).encode()
    found: str | None = None
    for name, stored in api.tokens:
        if hmac.compare_digest(presented, stored.strip().lower().encode()):
            found = name
    return Principal(f"billing:{found}") if found is not None else None
