"""A MariaDB Galera cluster as the database: every process writes through ONE node at a time.

Why one writer: Galera replicates a transaction's rows at COMMIT and certifies them there; the
row locks a transaction takes (the engine's ``SELECT … FOR UPDATE NOWAIT`` on the operation
row, the clone-slot rows, intake's reads) are local to the node it runs on. Two workers on two
nodes could both lock the same operation and both run its step, and only one of the commits
would survive certification. Writing through one node keeps the locks meaning what they mean
on a single server; certification conflicts (``1213`` at COMMIT) then only occur in the short
window after a failover or a fail-back when two nodes briefly take writes, and are retried
like a deadlock (:mod:`pvekvm.dberrors`).

The writer rule (the same in every process, so they agree without talking to each other):
**the first node in the URL's order that is synced** — ``wsrep_ready`` ON and
``wsrep_local_state`` 4 (Synced); only when none is, one that is ready in another state (a
donor). A node that is not synced answers ``1047`` (not ready) or is skipped at connect. A
connection on a later node looks again every :data:`FAILBACK_CHECK_S` seconds, between
transactions, and moves back when an earlier node is synced again (after its restart and IST),
so all processes converge on the same writer within that time.

Chosen over HAProxy/ProxySQL in front: nothing more to install, run, monitor and make
redundant (a single proxy is the single point of failure a cluster is meant to remove), and
the engine already reconnects and retries on its own; the rule above is what HAProxy's
``backup`` servers with a ``wsrep_local_state`` check would do.

On connecting to a node the session waits once for a causality check (``wsrep_sync_wait``):
after a failover the new writer has applied every transaction the cluster committed before
the first statement runs, so no step reads an operation row older than its last commit.

A hung node (SIGSTOP, a frozen VM, a partition that drops packets) keeps its sockets: it is
found out by time (:mod:`pvekvm.dburl`). A statement on it ends after the read timeout as a
lost server (the caller reconnects); connecting to it ends after the node's connect timeout
(:data:`NODE_CONNECT_TIMEOUT_S`, the greeting and the state check included). The other nodes
evict it within ``evs.inactive_timeout``, so the rule above picks the next node. A node that
timed out is then tried after the others, and not probed for fail-back, for
:data:`HUNG_SKIP_S` (in this process), so reconnects and fail-back checks do not wait on it
again and again; that is the fail-back interval, so processes disagree on the writer no longer
than the fail-back already allows. Once it answers again (SIGCONT: it rejoins by IST) the
fail-back moves every process back to it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import pymysql
from peewee import OperationalError

from pvekvm import dberrors, dburl
from pvekvm.dburl import DEFAULT_READ_TIMEOUT_S, DatabaseTarget, _ReconnectingMySQL, set_timeouts

log = logging.getLogger("pvekvm.db")
SYNCED = "4"  # wsrep_local_state: 1 joining, 2 donor/desynced, 3 joined, 4 synced
FAILBACK_CHECK_S = 5.0  # a connection on a later node looks for an earlier synced one this often
NODE_CONNECT_TIMEOUT_S = 3  # a node's TCP connect, greeting, login and state check
HUNG_SKIP_S = FAILBACK_CHECK_S  # a node that timed out is tried last (and not probed) this long
#: node → until when (time.monotonic) it is tried last: it timed out on this process
_hung: dict[tuple[str, int], float] = {}
_STATE = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state')"


def node_state(conn: pymysql.connections.Connection) -> tuple[bool, str | None]:
    """(ready, local state) of the node ``conn`` is on; (True, None) for a server without
    Galera (it has no wsrep status)."""
    with conn.cursor() as cur:
        cur.execute(_STATE)
        status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
    if not status:
        return True, None
    return status.get("wsrep_ready", "").upper() == "ON", status.get("wsrep_local_state")


def mark_hung(node: tuple[str, int]) -> None:
    """``node`` timed out: try it after the others for HUNG_SKIP_S."""
    if node not in _hung:  # newly (it leaves the dict when it answers again)
        log.warning("database: node %s:%s does not answer (timed out); trying the others "
                    "first", *node)
    _hung[node] = time.monotonic() + HUNG_SKIP_S


def hung(node: tuple[str, int]) -> bool:
    return _hung.get(node, 0.0) > time.monotonic()


def _order(target: DatabaseTarget) -> list[int]:
    """The nodes' indexes in the URL's order, those that timed out lately last."""
    return sorted(range(len(target.nodes)), key=lambda i: hung(target.nodes[i]))


def connect_writer(target: DatabaseTarget, *, database: str | None = None,
                   causal: bool = False, connect_timeout: float | None = None,
                   cluster: bool | None = None, synced_only: bool = False,
                   read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
                   **params: Any) -> pymysql.connections.Connection:
    """A connection to the writer of ``target`` (the rule above): the first synced node in
    order, else (unless ``synced_only``) the first ready one. The last error when no node can
    take writes (every node down: an OperationalError 2003; every node up but not ready: 1047;
    a node that does not answer: 2013 ... timed out). ``cluster``: check the node's state even
    when ``target`` names one node (default: when it names several). Each node's handshake and
    state check are bounded by ``connect_timeout`` (at most NODE_CONNECT_TIMEOUT_S on a
    cluster), the connection's reads afterwards by ``read_timeout_s``."""
    if not (len(target.nodes) > 1 if cluster is None else cluster):  # one server: as it is
        return dburl.connect(**target.connect_args(0), database=database,
                             handshake_s=connect_timeout or dburl.DEFAULT_CONNECT_TIMEOUT_S,
                             read_timeout_s=read_timeout_s, **params)
    timeout = min(connect_timeout or NODE_CONNECT_TIMEOUT_S, NODE_CONNECT_TIMEOUT_S)
    fallback: pymysql.connections.Connection | None = None
    error: Exception | None = None
    for i in _order(target):
        try:
            conn, ready, state = _open_node(target, i, timeout, database, params)
        except pymysql.err.MySQLError as exc:
            if dberrors.timed_out(exc):
                mark_hung(target.nodes[i])
            error = exc
            continue
        _hung.pop(target.nodes[i], None)
        set_timeouts(conn, read_timeout_s)
        if ready and state in (SYNCED, None):
            settled = _settle(conn, causal) if state is not None else conn
            if settled is not None:
                if fallback is not None:
                    fallback.close()
                return settled
            error = pymysql.err.OperationalError(
                2013, f"node {target.nodes[i][0]}:{target.nodes[i][1]} went away while "
                      "catching up with the cluster")
            continue
        if ready and fallback is None and not synced_only:
            fallback = conn
            continue
        conn.close()
        error = pymysql.err.OperationalError(
            1047, f"WSREP has not yet prepared node {target.nodes[i][0]}:{target.nodes[i][1]} "
                  f"for application use (state {state})")
    if fallback is not None:
        settled = _settle(fallback, causal)
        if settled is not None:
            return settled
    assert error is not None
    raise error


def _open_node(target: DatabaseTarget, i: int, timeout: float, database: str | None,
               params: dict[str, Any]) -> tuple[pymysql.connections.Connection, bool, str | None]:
    """A connection to node ``i`` and its (ready, state), all within ``timeout`` a read."""
    conn = dburl.connect(**target.connect_args(i), database=database, handshake_s=timeout,
                         read_timeout_s=timeout, **params)
    try:
        ready, state = node_state(conn)
    except pymysql.err.MySQLError:
        _close(conn)
        raise
    return conn, ready, state


def _settle(conn: pymysql.connections.Connection,
            causal: bool) -> pymysql.connections.Connection | None:
    """Wait once until the node has applied what the cluster committed before now; keep
    waiting at every read when ``causal``. None (the connection closed) when the node could
    not (it left the cluster meanwhile, or the wait timed out): the caller tries the next."""
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute("SELECT 1")
            if not causal:
                cur.execute("SET SESSION wsrep_sync_wait = 0")
    except pymysql.err.MySQLError as exc:
        if dberrors.timed_out(exc):  # a node back from a hang, still in its old view
            mark_hung((conn.host, conn.port))
        _close(conn)
        return None
    return conn


def _close(conn: pymysql.connections.Connection) -> None:
    with contextlib.suppress(Exception):  # a socket the server already dropped
        conn.close()


def writer_index(target: DatabaseTarget, conn: Any) -> int | None:
    """Which of ``target``'s nodes ``conn`` is on (None when unknown)."""
    node = (getattr(conn, "host", None), getattr(conn, "port", None))
    return target.nodes.index(node) if node in target.nodes else None


class GaleraDatabase(_ReconnectingMySQL):
    """A peewee database on a Galera cluster's writer (see the module's rule). A broken
    connection (the node died, left the primary component, is not ready: ``1047``, or did
    not answer within the read timeout) is reopened on the next writer by the reconnect logic
    of every caller (the consumer's wait for the database, peewee's reconnect outside
    transactions)."""

    reconnect_errors = (*_ReconnectingMySQL.reconnect_errors,
                        (OperationalError, "1047"))

    def __init__(self, target: DatabaseTarget, causal_reads: bool = False,
                 **kwargs: Any) -> None:
        self.target = target
        self.causal_reads = causal_reads
        host, port = target.nodes[0]
        super().__init__(target.name, host=host, port=port, user=target.user,
                         password=target.password, **kwargs)

    def _connect(self) -> pymysql.connections.Connection:
        params = {k: v for k, v in self.connect_params.items()
                  if k not in ("host", "port", "user", "password", "connect_timeout")}
        conn = connect_writer(self.target, database=self.database, causal=self.causal_reads,
                              read_timeout_s=self.read_timeout_s, autocommit=True, **params)
        conn._pvekvm_checked = time.monotonic()
        i = writer_index(self.target, conn)
        if i:
            log.warning("database: writing through node %s:%s (node %d of %d in the URL's "
                        "order; the earlier ones are not synced)", *self.target.nodes[i],
                        i + 1, len(self.target.nodes))
        return conn

    def _fail_back(self) -> None:
        """Between transactions, at most every FAILBACK_CHECK_S: when this connection is on a
        later node than the first synced one, close it (the next statement reconnects)."""
        if self.is_closed() or self.in_transaction():
            return
        conn = self._state.conn
        now = time.monotonic()
        if now - getattr(conn, "_pvekvm_checked", now) < FAILBACK_CHECK_S:
            return
        conn._pvekvm_checked = now
        i = writer_index(self.target, conn)
        if not i:
            return
        nodes = tuple(n for n in self.target.nodes[:i] if not hung(n))
        if not nodes:
            return  # the earlier ones timed out lately: not again yet
        earlier = DatabaseTarget(nodes, self.target.user, self.target.password,
                                 self.target.name)
        try:
            probe = connect_writer(earlier, connect_timeout=1, cluster=True, synced_only=True,
                                   read_timeout_s=1)
        except pymysql.err.MySQLError:
            return  # still down: stay where we are
        probe.close()
        log.warning("database: node %s:%s is synced again; moving back to it",
                    *earlier.nodes[writer_index(earlier, probe) or 0])
        self.close()

    def _timed_out(self) -> None:
        conn = self._state.conn
        if conn is not None and writer_index(self.target, conn) is not None:
            mark_hung((conn.host, conn.port))

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        self._fail_back()
        return super().execute_sql(sql, params)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_back()
        return super().begin(*args, **kwargs)
