"""The one place that says what a database error means for the caller (issue 26): every
worker, the engine and intake ask :func:`classify` instead of reading error codes themselves.

- ``DEADLOCK``: InnoDB chose this transaction as a deadlock's victim, or — on Galera — it
  failed certification at COMMIT or was aborted by a replicated write (both ``1213``). Nothing
  of it is committed: run it again on what is committed now.
- ``LOCK_BUSY``: another transaction holds the row (``1205`` lock wait timeout, ``3572``
  ``NOWAIT`` refused; a ``wsrep_sync_wait`` that timed out is a ``1205`` too). Nothing is
  committed: try again shortly.
- ``UNREACHABLE``: the server went away, cannot be reached, is shutting down, or is a Galera
  node that may not serve clients now (``1047 WSREP has not yet prepared node for application
  use``: not synced or outside the primary component; ``1180`` a commit cut by the node losing
  the cluster). The connection is dropped and opened again — on a Galera cluster, to the next
  writer (:mod:`pvekvm.db`); a transaction cut this way may or may not have committed, which
  the engine's nudge ids and compare-and-swap already decide (the redelivery is then stale or
  runs the step again, idempotently).
  A server that stopped answering without closing its sockets (SIGSTOP, a frozen VM, a
  partition dropping packets) is one too: after the connection's read timeout
  (``[database] read_timeout_s``) pymysql raises ``2013 ... (timed out)`` with the socket
  already closed, so that connection is never used again (:func:`timed_out` tells it apart,
  for the writer rule and the logs).
- ``OTHER``: anything else (a bug, a constraint): not retried here.

An error raised while handling one of these (a nested ``atomic()`` whose savepoint InnoDB has
already discarded: ``1305 SAVEPOINT does not exist``) is classified by the error it handled.
"""

from __future__ import annotations

from enum import Enum

from peewee import InterfaceError, OperationalError
from pymysql.err import MySQLError


class DbError(Enum):
    DEADLOCK = "deadlock"
    LOCK_BUSY = "lock_busy"
    UNREACHABLE = "unreachable"
    OTHER = "other"


_CODES: dict[int, DbError] = {
    1213: DbError.DEADLOCK,      # deadlock victim / Galera certification conflict / BF abort
    1205: DbError.LOCK_BUSY,     # lock wait timeout (also a wsrep_sync_wait timeout)
    3572: DbError.LOCK_BUSY,     # FOR UPDATE NOWAIT: the row is locked
    2002: DbError.UNREACHABLE,   # can't connect through the socket
    2003: DbError.UNREACHABLE,   # can't connect
    2006: DbError.UNREACHABLE,   # server has gone away
    2013: DbError.UNREACHABLE,   # lost connection during a query
    2055: DbError.UNREACHABLE,   # lost connection (SSL)
    1053: DbError.UNREACHABLE,   # server shutdown in progress
    1927: DbError.UNREACHABLE,   # connection was killed (a node leaving)
    1047: DbError.UNREACHABLE,   # WSREP has not yet prepared node for application use
    1180: DbError.UNREACHABLE,   # error during COMMIT (the node lost the primary component)
}


def _own(exc: BaseException) -> DbError | None:
    if isinstance(exc, InterfaceError):
        return DbError.UNREACHABLE  # a dead connection reused (pymysql raises it, code 0)
    if isinstance(exc, (OperationalError, MySQLError)) and exc.args \
            and isinstance(exc.args[0], int):
        return _CODES.get(exc.args[0])
    return None


def classify(exc: BaseException | None) -> DbError:
    """What ``exc`` (or the error it was raised while handling) means; OTHER when none of the
    above."""
    while exc is not None:
        kind = _own(exc)
        if kind is not None:
            return kind
        exc = exc.__context__
    return DbError.OTHER


def retry_now(exc: BaseException | None) -> bool:
    """Nothing was committed and the same work may run again at once or shortly (a deadlock,
    a certification conflict, a lock held elsewhere)."""
    return classify(exc) in (DbError.DEADLOCK, DbError.LOCK_BUSY)


def unreachable(exc: BaseException | None) -> bool:
    return classify(exc) is DbError.UNREACHABLE


def timed_out(exc: BaseException | None) -> bool:
    """``exc`` (or the error it was raised while handling) is a server that did not answer
    within the connection's timeout: a lost server whose socket is still open."""
    while exc is not None:
        if isinstance(exc, (OperationalError, MySQLError)) and exc.args \
                and exc.args[0] in (2003, 2006, 2013) and "timed out" in str(exc.args[-1]):
            return True
        exc = exc.__context__
    return False
