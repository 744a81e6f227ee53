"""The webhook endpoints: the one writer of ``webhook_endpoints``.

An endpoint comes from the settings file (``origin = settings``: :func:`sync_settings`, run by
every deliverer at start, adds, changes and removes them to match) or from a billing token
(``origin = api``: :func:`register`, owned by that token, which alone lists and deletes it).
Secrets are stored encrypted (Fernet, :mod:`pvekvm.secrets`). A new endpoint receives the
events numbered after it was registered (``fanned_seq`` starts at the feed's head).

Scope: an endpoint's ``scope`` is a billing token's name; its events are those of the services
that token may see (``[api.scopes]`` ranges, or every service for a token without ranges). A
scope that names no token known to the settings gets nothing: a deliverer never widens what
an endpoint receives because its settings lack a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import IntegrityError

from pvekvm import secrets as secretbox
from pvekvm.config import ApiSettings
from pvekvm.models import database
from pvekvm.webhooks.config import EndpointSetting


@dataclass(frozen=True)
class Endpoint:
    id: int
    name: str
    origin: str
    owner: str | None
    scope: str | None
    url: str
    event_types: tuple[str, ...]
    created_at: datetime
    fanned_seq: int


class NameTaken(ValueError):
    pass


class TooMany(ValueError):
    pass


_COLUMNS = "id, name, origin, owner, scope, url, event_types, created_at, fanned_seq"


def _endpoint(row: tuple[Any, ...]) -> Endpoint:
    return Endpoint(int(row[0]), row[1], row[2], row[3], row[4], row[5],
                    tuple(json.loads(row[6])), row[7], int(row[8]))


def head() -> int:
    """The feed's newest position (0: nothing numbered yet)."""
    row = database.execute_sql("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
    return int(row[0])


def _live_key(origin: str, owner: str | None, name: str) -> str:
    return f"{origin}:{owner or ''}:{name}"


def live() -> list[Endpoint]:
    rows = database.execute_sql(f"SELECT {_COLUMNS} FROM webhook_endpoints "
                                "WHERE deleted_at IS NULL ORDER BY id").fetchall()
    return [_endpoint(r) for r in rows]


def get(endpoint_id: int) -> Endpoint | None:
    row = database.execute_sql(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = %s "
                               "AND deleted_at IS NULL", (endpoint_id,)).fetchone()
    return _endpoint(row) if row else None


def owned_by(token_name: str) -> list[Endpoint]:
    """The endpoints a billing token registered, and those the settings scope to it."""
    rows = database.execute_sql(
        f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL AND "
        "((origin = 'api' AND owner = %s) OR (origin = 'settings' AND scope = %s)) ORDER BY id",
        (token_name, token_name)).fetchall()
    return [_endpoint(r) for r in rows]


def secrets_of(key_file: str, endpoint_id: int) -> list[str]:
    row = database.execute_sql("SELECT secrets_enc FROM webhook_endpoints WHERE id = %s",
                               (endpoint_id,)).fetchone()
    if row is None:
        return []
    return list(json.loads(secretbox.decrypt(key_file, row[0].encode())))


def _encrypted(key_file: str, secrets: list[str] | tuple[str, ...]) -> str:
    return secretbox.encrypt(key_file, json.dumps(list(secrets))).decode()


def register(key_file: str, owner: str, name: str, url: str, event_types: list[str],
             secret: str, limit: int) -> Endpoint:
    """A new endpoint of billing token ``owner`` (scope: the same token). NameTaken when the
    token has a live one of that name, TooMany over ``limit``."""
    with database.atomic():
        count = database.execute_sql(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE origin = 'api' AND owner = %s AND "
            "deleted_at IS NULL FOR UPDATE", (owner,)).fetchone()[0]
        if count >= limit:
            raise TooMany(f"{owner} already has {count} webhook endpoints (the limit, "
                          "[webhook_delivery] api_max_endpoints); delete one first")
        try:
            new_id = database.execute_sql(
                "INSERT INTO webhook_endpoints (name, origin, owner, scope, url, event_types, "
                "secrets_enc, fanned_seq, live_key, created_at) "
                "VALUES (%s, 'api', %s, %s, %s, %s, %s, %s, %s, NOW(3))",
                (name, owner, owner, url, json.dumps(event_types),
                 _encrypted(key_file, [secret]), head(),
                 _live_key("api", owner, name))).lastrowid
        except IntegrityError:  # the live key's unique index: a racer took the name
            raise NameTaken(f"a webhook endpoint named {name} exists") from None
    found = get(int(new_id))
    assert found is not None
    return found


def rotate(key_file: str, endpoint_id: int, secret: str, keep_previous: bool) -> None:
    """Sign with ``secret`` from now on, and with the newest earlier one too when
    ``keep_previous`` (two valid at once while receivers move over)."""
    with database.atomic():
        old = secrets_of(key_file, endpoint_id)
        new = [secret, *old[:1]] if keep_previous else [secret]
        database.execute_sql("UPDATE webhook_endpoints SET secrets_enc = %s WHERE id = %s",
                             (_encrypted(key_file, new), endpoint_id))


def delete(endpoint_id: int) -> None:
    """Gone at once: nothing more is sent to it (a deliverer that claims one of its streams
    finds it deleted and leaves the stream idle)."""
    database.execute_sql("UPDATE webhook_endpoints SET deleted_at = NOW(3), live_key = NULL "
                         "WHERE id = %s AND deleted_at IS NULL", (endpoint_id,))


def sync_settings(key_file: str, wanted: tuple[EndpointSetting, ...]) -> list[str]:
    """Make the live settings endpoints those of ``wanted`` (matched by name): new ones added
    (from the feed's head), changed ones updated in place (their queue kept), the others
    deleted. Returns one line per change. Deliverers starting at once: the one that loses the
    race for a new name's row looks again and finds it."""
    try:
        return _sync(key_file, wanted)
    except IntegrityError:
        return _sync(key_file, wanted)


def _sync(key_file: str, wanted: tuple[EndpointSetting, ...]) -> list[str]:
    lines = []
    with database.atomic():
        rows = database.execute_sql(
            "SELECT id, name, url, event_types, scope, secrets_enc FROM webhook_endpoints "
            "WHERE origin = 'settings' AND deleted_at IS NULL FOR UPDATE").fetchall()
        have = {r[1]: r for r in rows}
        for ep in wanted:
            enc = _encrypted(key_file, ep.secrets)
            types = json.dumps(list(ep.event_types))
            row = have.pop(ep.name, None)
            if row is None:
                database.execute_sql(
                    "INSERT INTO webhook_endpoints (name, origin, owner, scope, url, "
                    "event_types, secrets_enc, fanned_seq, live_key, created_at) "
                    "VALUES (%s, 'settings', NULL, %s, %s, %s, %s, %s, %s, NOW(3))",
                    (ep.name, ep.scope, ep.url, types, enc, head(),
                     _live_key("settings", None, ep.name)))
                lines.append(f"webhook {ep.name}: added ({ep.url})")
                continue
            same = (row[2] == ep.url and row[3] == types and row[4] == ep.scope
                    and json.loads(secretbox.decrypt(key_file, row[5].encode()))
                    == list(ep.secrets))
            if not same:
                database.execute_sql(
                    "UPDATE webhook_endpoints SET url = %s, event_types = %s, scope = %s, "
                    "secrets_enc = %s WHERE id = %s", (ep.url, types, ep.scope, enc, row[0]))
                lines.append(f"webhook {ep.name}: settings changed")
        for name, row in have.items():
            delete(int(row[0]))
            lines.append(f"webhook {name}: removed (no longer in the settings)")
    return lines


def service_filter(scope: str | None, api: ApiSettings) -> Callable[[int | None], bool]:
    """Which services' events an endpoint of ``scope`` may receive (see the module doc)."""
    if scope is None:
        return lambda service_id: True
    ranges = dict(api.scopes).get(scope)
    if ranges is not None:
        return lambda service_id: service_id is not None and any(
            lo <= service_id <= hi for lo, hi in ranges)
    if scope in {name for name, _ in api.tokens}:
        return lambda service_id: True
    return lambda service_id: False
