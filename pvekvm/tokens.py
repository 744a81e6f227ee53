"""Client tokens: ``svc.<token id>.<secret>``, bound to one life of one service.

The only module that writes ``client_tokens``. A token is random (a 96-bit public id and a
256-bit secret); the table keeps the id, the service, the service's client and ``created_at``
when it was minted (a re-created service id is a new row: another ``created_at``, maybe another
client), the SHA-256 of the secret (never the secret), its expiry and its revocation.

A token is good while: not revoked, not expired (database clock), and its service exists, is
not terminating or terminated, and still has the client and ``created_at`` it was minted for.
Terminate also revokes every token of the service (in the commit that marks it terminated).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from pvekvm.db import values
from pvekvm.lifecycle import GONE, sql_list
from pvekvm.models import database

PREFIX = "svc."
ID_LEN = 16          # secrets.token_urlsafe(12)
SECRET_LEN = 43      # secrets.token_urlsafe(32): 256 bits
_ID = re.compile(r"[A-Za-z0-9_-]{16}")


@dataclass(frozen=True)
class Minted:
    token: str       # shown once, to the billing caller that minted it
    token_id: str
    service_id: int
    expires_at: datetime


@dataclass(frozen=True)
class Holder:
    """Who a good token stands for."""

    token_id: str
    service_id: int


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed client token, else None (linear, bounded)."""
    if len(token) != len(PREFIX) + ID_LEN + 1 + SECRET_LEN or not token.startswith(PREFIX):
        return None
    token_id, dot, secret = token[len(PREFIX):].partition(".")
    if not dot or not _ID.fullmatch(token_id) or len(secret) != SECRET_LEN:
        return None
    return token_id, secret


def mint(service_id: int, client_id: int, service_created_at: datetime, ttl_s: int,
         created_by: str) -> Minted | None:
    """A new token for the life of the service that has ``client_id`` and
    ``service_created_at`` (as the caller read it), valid ``ttl_s`` seconds. None when that
    life has ended (the insert reads the services row itself, so a terminate or re-create
    racing the mint leaves no token)."""
    token_id, secret = secrets.token_urlsafe(12), secrets.token_urlsafe(32)
    cursor = database.execute_sql(
        "INSERT INTO client_tokens (id, service_id, client_id, service_created_at, "
        "secret_sha256, created_by, created_at, expires_at) "
        "SELECT %s, id, client_id, created_at, %s, %s, NOW(3), NOW(3) + INTERVAL %s SECOND "
        "FROM services WHERE id = %s AND client_id = %s AND created_at = %s "
        f"AND status NOT IN {sql_list(GONE)}",
        (token_id, _digest(secret), created_by[:64], int(ttl_s), service_id, client_id,
         service_created_at))
    if cursor.rowcount != 1:
        return None
    row = values("SELECT expires_at FROM client_tokens WHERE id = %s", token_id)
    assert row is not None
    return Minted(f"{PREFIX}{token_id}.{secret}", token_id, service_id, row[0])


def verify(token: str) -> Holder | None:
    """The holder of a good token, else None: one indexed read, the hash compared in constant
    time whether or not the token is still good."""
    parts = split(token)
    if parts is None:
        return None
    token_id, secret = parts
    row = values(
        "SELECT t.service_id, t.secret_sha256, (t.revoked_at IS NULL AND t.expires_at > NOW(3) "
        f"AND s.status NOT IN {sql_list(GONE)} AND s.client_id = t.client_id "
        "AND s.created_at = t.service_created_at) FROM client_tokens t "
        "LEFT JOIN services s ON s.id = t.service_id WHERE t.id = %s", token_id)
    if row is None:
        return None
    service_id, stored, good = row
    matches = hmac.compare_digest(bytes(stored), _digest(secret))
    return Holder(token_id, int(service_id)) if matches and good else None


def service_of(token_id: str) -> int | None:
    """The service a token id belongs to (None: no such token)."""
    if not _ID.fullmatch(token_id):
        return None
    row = values("SELECT service_id FROM client_tokens WHERE id = %s", token_id)
    return int(row[0]) if row else None


def revoke(token_id: str, why: str) -> bool:
    """Revoke one token; False when it was revoked already (the first reason stays)."""
    return bool(database.execute_sql(
        "UPDATE client_tokens SET revoked_at = NOW(3), revoked_why = %s "
        "WHERE id = %s AND revoked_at IS NULL", (why[:64], token_id)).rowcount == 1)


def revoke_service(service_id: int, why: str) -> int:
    """Revoke every token of the service (terminate); how many were still unrevoked."""
    return int(database.execute_sql(
        "UPDATE client_tokens SET revoked_at = NOW(3), revoked_why = %s "
        "WHERE service_id = %s AND revoked_at IS NULL", (why[:64], service_id)).rowcount)


def purge_ended(keep_days: int = 30) -> int:
    """Forget tokens that ended (expired or revoked) more than ``keep_days`` ago; the audit log
    keeps who minted and revoked them. The scheduler runs it every minute."""
    return int(database.execute_sql(
        "DELETE FROM client_tokens WHERE LEAST(expires_at, COALESCE(revoked_at, expires_at)) "
        "< NOW(3) - INTERVAL %s DAY LIMIT 1000", (int(keep_days),)).rowcount)
