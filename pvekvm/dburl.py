"""A database URL taken apart (one server, or a Galera cluster's nodes), and the plain
reconnecting connection: what :mod:`pvekvm.db` and :mod:`pvekvm.galera` both build on (so
neither imports the other back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from peewee import MySQLDatabase
from playhouse.shortcuts import ReconnectMixin


class _ReconnectingMySQL(ReconnectMixin, MySQLDatabase):  # type: ignore[misc]  # no stubs
    """Re-opens the connection when the server went away (restart, idle timeout)."""


@dataclass(frozen=True)
class DatabaseTarget:
    """A database URL taken apart: the server, or a Galera cluster's nodes in their order."""

    nodes: tuple[tuple[str, int], ...]
    user: str
    password: str
    name: str

    def connect_args(self, node: int = 0) -> dict[str, Any]:
        host, port = self.nodes[node]
        return dict(host=host, port=port, user=self.user, password=self.password)


def parse_url(url: str) -> DatabaseTarget:
    """``mysql://user:pass@host[:port][,host[:port]...]/name``; ValueError naming the part
    that is wrong."""
    u = urlsplit(url)
    if u.scheme not in ("mysql", "mysql+pymysql", "mariadb"):
        raise ValueError(f"unsupported database URL scheme {u.scheme!r}")
    userinfo, _, hosts = u.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = []
    for part in hosts.split(",") if hosts else [""]:
        part = part.strip()
        if part.startswith("["):  # [v6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        try:
            port = int(port_text) if port_text else 3306
        except ValueError:
            raise ValueError(f"database URL: bad port in {part!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"database URL: port out of range in {part!r}")
        nodes.append((host or "127.0.0.1", port))
    return DatabaseTarget(tuple(nodes), unquote(user or "root"), unquote(password),
                          u.path.lstrip("/"))
