"""Console tokens and the sessions they open: the only module that writes ``console_sessions``.

A console token is ``con.<id>.<secret>`` (a 96-bit public id, a 256-bit secret; only the
secret's SHA-256 is kept). The API mints it for one service (:func:`mint`); the console proxy
peeks at it to serve the page (:func:`check`, nothing consumed) and claims it when the browser's
websocket arrives (:func:`claim`). A token is good for one claim, only while:

* unused, and before ``connect_by`` (``[console] token_ttl_s`` after minting, database clock);
* its service still has the life it was minted for (client id and ``created_at``: a reused id,
  maybe another client's, refuses it) and is not suspending, suspended, terminating or
  terminated;
* the client token it was minted with (if any) is still good (not revoked, not expired);
* the browser connects from ``bound_address`` when one was bound;
* the service has fewer than ``[console] sessions_per_service`` open sessions, counted over
  every proxy process (a session whose proxy stopped heart-beating for ``STALE_S`` is not
  counted), under a named lock per service so two claims cannot both take the last place.

The same conditions, re-read every ``check_interval_s`` by the proxy (:func:`heartbeat`), end
an open session: a suspend or terminate cuts it within seconds. Every claim, refusal and end is
an ``audit_log`` row (who minted it, the browser's address, how long, why it ended).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pvekvm.db import values
from pvekvm.lifecycle import GONE, SUSPENDED_STATUSES, sql_list
from pvekvm.models import database

PREFIX = "con."
ID_LEN, SECRET_LEN = 16, 43
_ID = re.compile(r"[A-Za-z0-9_-]{16}")
STALE_S = 30  # a proxy that has not heart-beaten a session for this long has lost it
ENDED_STATUSES = tuple(sorted(SUSPENDED_STATUSES | GONE))
_STATUS_SQL = ", ".join(f"'{s}'" for s in ENDED_STATUSES)

#: why a session may not run (or must end), as SQL over c (console_sessions), s (services),
#: t (client_tokens); NULL: it may
_CUT_REASON = f"""CASE
  WHEN s.id IS NULL OR s.client_id <> c.client_id OR s.created_at <> c.service_created_at
    THEN 'the service was re-created'
  WHEN s.suspended OR s.status IN {sql_list(SUSPENDED_STATUSES)} THEN 'the service is suspended'
  WHEN s.status IN {sql_list(GONE)} THEN 'the service is terminated'
  WHEN c.client_token_id IS NOT NULL AND (t.id IS NULL OR t.revoked_at IS NOT NULL
       OR t.expires_at <= NOW(3)) THEN 'the client token ended'
  ELSE NULL END"""


@dataclass(frozen=True)
class Minted:
    token: str
    session_id: str
    connect_by: datetime


@dataclass(frozen=True)
class Claim:
    """A claimed token: what the proxy needs to open the VM's console."""

    session_id: str
    service_id: int
    vmid: int
    node: str
    created_by: str
    peer: str
    cluster: str = "default"  # the service's cluster: whose API opens the console


class Refused(Exception):
    """A token that may not open (or may no longer keep) a session; the text says why."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed console token, else None (bounded, linear)."""
    if len(token) != len(PREFIX) + ID_LEN + 1 + SECRET_LEN or not token.startswith(PREFIX):
        return None
    sid, dot, secret = token[len(PREFIX):].partition(".")
    if not dot or not _ID.fullmatch(sid) or len(secret) != SECRET_LEN:
        return None
    return sid, secret


def mint(service_id: int, client_id: int, service_created_at: datetime, ttl_s: int,
         created_by: str, client_token_id: str | None, bound_address: str | None) -> Minted | None:
    """A token for the life of the service with ``client_id`` and ``service_created_at``; None
    when that life has ended or the service is suspended (the insert reads the services row
    itself, so a suspend or re-create racing the mint leaves no token)."""
    sid, secret = secrets.token_urlsafe(12), secrets.token_urlsafe(32)
    cursor = database.execute_sql(
        "INSERT INTO console_sessions (id, service_id, client_id, service_created_at, "
        "secret_sha256, client_token_id, bound_address, created_by, created_at, connect_by) "
        "SELECT %s, id, client_id, created_at, %s, %s, %s, %s, NOW(3), "
        "NOW(3) + INTERVAL %s SECOND FROM services WHERE id = %s AND client_id = %s "
        f"AND created_at = %s AND NOT suspended AND status NOT IN ({_STATUS_SQL})",
        (sid, _digest(secret), client_token_id, bound_address, created_by[:64], int(ttl_s),
         service_id, client_id, service_created_at))
    if cursor.rowcount != 1:
        return None
    row = values("SELECT connect_by FROM console_sessions WHERE id = %s", sid)
    assert row is not None
    return Minted(f"{PREFIX}{sid}.{secret}", sid, row[0])


def _row(token: str, lock: bool) -> tuple[Any, ...]:
    """The token's row with the verdict columns; Refused for a token that is not one."""
    parts = split(token)
    if parts is None:
        raise Refused("not a console token")
    sid, secret = parts
    row = values(
        f"SELECT c.id, c.service_id, c.secret_sha256, c.used_at IS NOT NULL, "
        f"c.connect_by <= NOW(3), c.bound_address, c.created_by, s.vmid, s.node, {_CUT_REASON}, "
        "s.cluster "
        "FROM console_sessions c LEFT JOIN services s ON s.id = c.service_id "
        "LEFT JOIN client_tokens t ON t.id = c.client_token_id WHERE c.id = %s"
        + (" FOR UPDATE" if lock else ""), sid)
    if row is None or not hmac.compare_digest(bytes(row[2]), _digest(secret)):
        raise Refused("unknown console token")
    return row


def _verdict(row: tuple[Any, ...], service_id: int | None, peer: str) -> None:
    sid, svc, _, used, expired, bound, _, vmid, node, cut, _ = row
    if service_id is not None and service_id != svc:
        raise Refused("this console token is for another service")
    if cut:
        raise Refused(f"console refused: {cut}")
    if used:
        raise Refused("this console token was used already")
    if expired:
        raise Refused("this console token expired")
    if bound and bound != peer:
        raise Refused("this console token was issued for another address")
    if not vmid or not node:
        raise Refused("the service has no VM")


def check(token: str, service_id: int | None, peer: str) -> int:
    """The service a still-good token opens (nothing consumed), else Refused."""
    row = _row(token, lock=False)
    _verdict(row, service_id, peer)
    return int(row[1])


def claim(token: str, service_id: int | None, peer: str, proxy: str, limit: int) -> Claim:
    """Use the token up and open its session, or Refused (the token is used up whenever its
    secret was right: one attempt per token). Audit-logged either way. Claims of one service
    take turns (a named lock held over the transaction: needs no privilege on services)."""
    parts = split(token)
    if parts is None:
        raise Refused("not a console token")
    svc_id = values("SELECT service_id FROM console_sessions WHERE id = %s", parts[0])
    if svc_id is None:
        raise Refused("unknown console token")
    name = f"{database.database}:console:{svc_id[0]}"[-64:]
    (got,) = values("SELECT GET_LOCK(%s, 5)", name) or (0,)
    if got != 1:
        raise Refused("the service's console is busy: try again")
    try:
        return _claim(token, service_id, peer, proxy, limit)
    finally:
        database.execute_sql("SELECT RELEASE_LOCK(%s)", (name,))


def _claim(token: str, service_id: int | None, peer: str, proxy: str, limit: int) -> Claim:
    with database.atomic():
        row = _row(token, lock=True)
        sid, svc = str(row[0]), int(row[1])
        why: str | None = None
        try:
            _verdict(row, service_id, peer)
            open_now = values(
                "SELECT COUNT(*) FROM console_sessions WHERE service_id = %s AND ended_at IS NULL "
                "AND used_at IS NOT NULL AND seen_at > NOW(3) - INTERVAL %s SECOND",
                svc, STALE_S)
            if limit and open_now and open_now[0] >= limit:
                raise Refused(f"the service has {open_now[0]} console sessions open already "
                              f"(at most {limit})")
        except Refused as exc:
            why = str(exc)
        if row[3]:  # used already: nothing changes on the row of the earlier session
            _audit(svc, "console_session_refused", row[6], peer, session=sid, reason=why)
            raise Refused(why or "used")
        database.execute_sql(
            "UPDATE console_sessions SET used_at = NOW(3), peer = %s, proxy = %s, "
            "seen_at = NOW(3), ended_at = IF(%s, NOW(3), NULL), end_reason = %s WHERE id = %s",
            (peer[:45], proxy[:96], why is not None, (why or "")[:96] or None, sid))
        _audit(svc, "console_session_refused" if why else "console_session_opened", row[6],
               peer, session=sid, **({"reason": why} if why else {}))
        if why:
            raise Refused(why)
        return Claim(sid, svc, int(row[7]), str(row[8]), str(row[6]), peer, str(row[10]))


def heartbeat(session_ids: list[str]) -> dict[str, str]:
    """Mark the sessions as alive; the ones that must end now, with why."""
    if not session_ids:
        return {}
    marks = ", ".join(["%s"] * len(session_ids))
    database.execute_sql(f"UPDATE console_sessions SET seen_at = NOW(3) WHERE id IN ({marks}) "
                         "AND ended_at IS NULL", session_ids)
    rows = database.execute_sql(
        f"SELECT c.id, IF(c.ended_at IS NOT NULL, COALESCE(c.end_reason, 'ended'), "
        f"{_CUT_REASON}) FROM console_sessions c LEFT JOIN services s ON s.id = c.service_id "
        f"LEFT JOIN client_tokens t ON t.id = c.client_token_id WHERE c.id IN ({marks})",
        session_ids).fetchall()
    return {str(r[0]): str(r[1]) for r in rows if r[1]}


def end(claimed: Claim, reason: str, bytes_up: int, bytes_down: int) -> None:
    """Close the session's row (first reason stays) and audit how long it ran."""
    with database.atomic():
        database.execute_sql(
            "UPDATE console_sessions SET ended_at = COALESCE(ended_at, NOW(3)), "
            "end_reason = COALESCE(end_reason, %s), bytes_up = %s, bytes_down = %s "
            "WHERE id = %s", (reason[:96], bytes_up, bytes_down, claimed.session_id))
        row = values("SELECT TIMESTAMPDIFF(MICROSECOND, used_at, ended_at) / 1e6, end_reason "
                     "FROM console_sessions WHERE id = %s", claimed.session_id)
        _audit(claimed.service_id, "console_session_closed", claimed.created_by, claimed.peer,
               session=claimed.session_id, duration_s=round(float(row[0] or 0), 1) if row else 0,
               reason=row[1] if row else reason, bytes_up=bytes_up, bytes_down=bytes_down)


def cut_service(service_id: int, why: str) -> int:
    """End every open session of the service (the proxies see it on their next heartbeat)."""
    return int(database.execute_sql(
        "UPDATE console_sessions SET ended_at = NOW(3), end_reason = %s WHERE service_id = %s "
        "AND used_at IS NOT NULL AND ended_at IS NULL", (why[:96], service_id)).rowcount)


def purge_ended(keep_days: int = 30) -> int:
    """Forget tokens and sessions that ended (or never connected) ``keep_days`` ago; the audit
    log keeps their story."""
    return int(database.execute_sql(
        "DELETE FROM console_sessions WHERE COALESCE(ended_at, connect_by) "
        "< NOW(3) - INTERVAL %s DAY LIMIT 1000", (int(keep_days),)).rowcount)


def _audit(service_id: int, event: str, by: str, peer: str, **detail: Any) -> None:
    database.execute_sql(
        "INSERT INTO audit_log (service_id, event, detail, created_at) VALUES (%s, %s, %s, NOW())",
        (service_id, event, json.dumps({"by": by, "from": peer, **detail}, sort_keys=True)))
