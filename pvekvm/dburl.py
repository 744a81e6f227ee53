"""A database URL taken apart (one server, or a Galera cluster's nodes), the bounded
connection and the plain reconnecting database: what :mod:`pvekvm.db` and :mod:`pvekvm.galera`
both build on (so neither imports the other back).

A server can stop answering without closing its sockets (SIGSTOP, a frozen VM, a partition
that drops packets): the kernel still accepts and acknowledges, so nothing but a timeout on
the client tells it from a slow answer. Every connection the engine opens is therefore
bounded twice: the handshake (TCP connect, greeting, login, init command) by the connect
timeout, then every read and write by ``[database] read_timeout_s``. A wait that long ends in
pymysql's ``2013 Lost connection ... (timed out)`` with the socket already closed, so the
connection is never used again (:mod:`pvekvm.dberrors`: a lost server)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from peewee import MySQLDatabase, OperationalError
from playhouse.shortcuts import ReconnectMixin

from pvekvm import dberrors

#: ``[database] read_timeout_s``'s default: how long one statement may go unanswered before
#: the server is taken for lost. Above the longest wait the engine asks of the server: a row
#: lock (``innodb_lock_wait_timeout``, 50 s by default, and capped per session below this
#: timeout: :data:`LOCK_WAIT_MARGIN_S`), a named lock (``GET_LOCK``: 30 s at most, the
#: traffic-overage pass), a Galera causal read (``repl.causal_read_timeout``, 30 s).
DEFAULT_READ_TIMEOUT_S = 60.0
#: a session's row lock waits end (``1205``, retried as lock busy) this much before its read
#: timeout would: a long lock wait is never taken for a lost server
LOCK_WAIT_MARGIN_S = 5
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def set_timeouts(conn: pymysql.connections.Connection, seconds: float | None) -> None:
    """Bound every later read and write of ``conn`` by ``seconds`` (None: unbounded). pymysql
    applies these attributes before each packet (``_read_packet``, ``_write_bytes``) and has
    no public setter."""
    conn._read_timeout = seconds
    conn._write_timeout = seconds


def connect(*, handshake_s: float, read_timeout_s: float | None,
            **params: Any) -> pymysql.connections.Connection:
    """``pymysql.connect(**params)`` whose handshake takes at most about ``handshake_s`` (a
    server that accepts and never greets: ``2013 ... (timed out)``), then bounded by
    ``read_timeout_s``."""
    conn = pymysql.connect(connect_timeout=handshake_s, read_timeout=handshake_s,
                           write_timeout=handshake_s, **params)
    set_timeouts(conn, read_timeout_s)
    return conn


@contextlib.contextmanager
def longer_reads(conn: pymysql.connections.Connection, seconds: float) -> Iterator[None]:
    """``conn``'s reads bounded by ``seconds`` while the block runs (schema changes: an
    ``ALTER TABLE`` of a large table, the schema lock's wait), then as before."""
    before = conn._read_timeout
    set_timeouts(conn, seconds)
    try:
        yield
    finally:
        set_timeouts(conn, before)


class _BoundedMySQL(MySQLDatabase):
    """Tells :meth:`_timed_out` when a statement went unanswered for the read timeout (under
    the reconnect logic, so before it reconnects)."""

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]
        except OperationalError as exc:
            if dberrors.timed_out(exc):
                self._timed_out()
            raise

    def _timed_out(self) -> None:
        """The current connection's server did not answer in time (its socket is closed)."""


class _ReconnectingMySQL(ReconnectMixin, _BoundedMySQL):  # type: ignore[misc]  # no stubs
    """Re-opens the connection when the server went away (restart, idle timeout, a read that
    timed out). Every connection bounded as the module says: ``connect_timeout`` (a keyword
    of the database) for the handshake, ``read_timeout_s`` afterwards (None: unbounded)."""

    def __init__(self, database: str, *, read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
                 **kwargs: Any) -> None:
        self.read_timeout_s = read_timeout_s
        super().__init__(database, **kwargs)

    def _connect(self) -> pymysql.connections.Connection:
        params = dict(self.connect_params)
        handshake = params.pop("connect_timeout", None) or DEFAULT_CONNECT_TIMEOUT_S
        return connect(database=self.database, autocommit=True, handshake_s=handshake,
                       read_timeout_s=self.read_timeout_s, **params)

    def _initialize_connection(self, conn: pymysql.connections.Connection) -> None:
        """Row lock waits of this session end before its read timeout (never above the
        server's own setting)."""
        if self.read_timeout_s is None:
            return
        cap = max(1, int(self.read_timeout_s) - LOCK_WAIT_MARGIN_S)
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = "
                        "LEAST(@@GLOBAL.innodb_lock_wait_timeout, %s)", (cap,))


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
