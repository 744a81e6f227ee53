"""Bearer tokens: billing tokens (hashed in settings) and client tokens (pvekvm.tokens: random,
stored hashed, bound to one life of one service)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pvekvm import tokens
from pvekvm.config import ApiSettings


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``service_id`` set: a client token, exactly that service. Else billing:
    the service ids in ``ranges`` ((first, last) inclusive), or any when ``ranges`` is None.
    ``token_id``: the client token's public id (None for billing)."""

    name: str
    service_id: int | None = None
    token_id: str | None = None
    ranges: tuple[tuple[int, int], ...] | None = None

    def may_read(self, service_id: int) -> bool:
        if self.service_id is not None:
            return self.service_id == service_id
        return self.ranges is None or any(lo <= service_id <= hi for lo, hi in self.ranges)

    @property
    def is_client(self) -> bool:
        return self.service_id is not None


def hash_token(token: str) -> str:
    """What settings store for a billing token. Tokens are 256-bit random, so a plain SHA-256
    (no slow KDF) cannot be brute-forced."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def authenticate(api: ApiSettings, token: str) -> Principal | None:
    """The principal ``token`` stands for, or None. A client token (``svc.`` prefix) is looked
    up by its id; a billing token is compared against every billing hash in constant time (no
    early exit, so timing says nothing about which one nearly matched)."""
    if token.startswith(tokens.PREFIX):
        holder = tokens.verify(token)
        if holder is None:
            return None
        return Principal(f"client:{holder.service_id}/{holder.token_id}", holder.service_id,
                         holder.token_id)
    presented = hash_token(token).encode()
    found: str | None = None
    for name, stored in api.tokens:
        if hmac.compare_digest(presented, stored.strip().lower().encode()):
            found = name
    if found is None:
        return None
    return Principal(f"billing:{found}", ranges=dict(api.scopes).get(found))
