"""A database server that hangs (stops answering without closing its sockets: SIGSTOP, a frozen
VM, a partition dropping packets) is a lost server after the connection's read timeout, never
a process blocked for ever: the error is classified (pvekvm/dberrors.py), the connection it
happened on is closed and never used again, and a transaction it cut left nothing committed.
The single-server mode, through tests/hangproxy.py in front of the test database's server;
the Galera failover for a hang is tests/scale/test_galera_hang.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pymysql
import pytest
from peewee import InterfaceError, OperationalError

from pvekvm import db as dbmod
from pvekvm import dberrors
from pvekvm.config import ConfigError, load_settings
from pvekvm.dberrors import DbError
from pvekvm.dburl import DEFAULT_READ_TIMEOUT_S, LOCK_WAIT_MARGIN_S
from tests.hangproxy import FreezingProxy

TIMEOUT_S = 2.0
SLACK_S = 1.5  # a 2-core machine under the other checkouts' tests


def _via(url: str, port: int) -> str:
    u = urlsplit(url)
    user = u.netloc.rpartition("@")[0]
    return u._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()


@pytest.fixture()
def proxy(database_url: str) -> Iterator[FreezingProxy]:
    u = urlsplit(database_url)
    p = FreezingProxy((u.hostname or "127.0.0.1", u.port or 3306))
    yield p
    p.close()


@pytest.fixture()
def probe_table(database) -> Iterator[str]:
    """A table of this test's own in the test database (dropped afterwards)."""
    database.execute_sql("CREATE TABLE IF NOT EXISTS hang_probe (id INT PRIMARY KEY)")
    database.execute_sql("DELETE FROM hang_probe")
    yield "hang_probe"
    database.execute_sql("DROP TABLE IF EXISTS hang_probe")


def _elapsed(fn, unblock, limit: float = 30) -> tuple[float, BaseException]:
    """(seconds, error) of ``fn``, which must fail with a database error. Should it block
    (no timeout: the bug this file guards against), ``unblock`` runs after ``limit`` seconds
    (thaw the proxy, close the listener) and the test fails instead of hanging the suite."""
    watchdog = threading.Timer(limit, unblock)
    watchdog.start()
    t0 = time.monotonic()
    try:
        fn()
        exc: BaseException | None = None
    except (OperationalError, InterfaceError, pymysql.err.MySQLError) as caught:
        exc = caught
    finally:
        watchdog.cancel()
    took = time.monotonic() - t0
    assert took < limit, f"blocked {took:.0f} s, until the test let the server go"
    assert exc is not None, "no error from a hung server"
    return took, exc


def test_a_server_that_accepts_and_never_greets_is_a_lost_server_within_the_timeout():
    """The kernel accepts (listen backlog), nobody answers: connecting ends as a lost server
    after the handshake's timeout (before: pymysql waited for the greeting for ever)."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"mysql://root@127.0.0.1:{silent.getsockname()[1]}/x"
        db = dbmod.open_database(url, read_timeout_s=TIMEOUT_S)
        took, exc = _elapsed(db.connect, silent.close)
        assert took < TIMEOUT_S + SLACK_S, f"connecting took {took:.1f} s"
        assert dberrors.classify(exc) is DbError.UNREACHABLE and dberrors.timed_out(exc), exc
    finally:
        silent.close()


def test_a_hang_mid_transaction_cuts_it_drops_the_connection_and_commits_nothing(
        database, database_url, probe_table, proxy):
    db = dbmod.open_database(_via(database_url, proxy.port), read_timeout_s=TIMEOUT_S)
    db.connect()
    first = db.connection()
    first_id = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]

    def cut() -> None:
        with db.atomic():
            db.execute_sql("INSERT INTO hang_probe (id) VALUES (1)")
            proxy.freeze()
            db.execute_sql("INSERT INTO hang_probe (id) VALUES (2)")

    took, exc = _elapsed(cut, proxy.thaw)
    assert took < TIMEOUT_S + SLACK_S, f"the statement on a hung server took {took:.1f} s"
    assert dberrors.classify(exc) is DbError.UNREACHABLE and dberrors.timed_out(exc), exc
    assert not first.open, "the connection a read timed out on is still open"
    # what the runner does with an unreachable database: close, wait, go again
    db.close()
    # reconnecting while it hangs: the handshake times out, peewee's reconnect tries once more
    took, exc = _elapsed(lambda: db.execute_sql("SELECT 1"), proxy.thaw)
    assert took < 2 * TIMEOUT_S + SLACK_S and dberrors.unreachable(exc), (took, exc)
    db.close()
    proxy.thaw()
    now_id = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    assert now_id != first_id and db.connection() is not first
    # the server rolls the cut transaction back once it reads the client's end
    deadline = time.monotonic() + 20
    while database.execute_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                               "WHERE ID = %s", (first_id,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the cut session is still on the server"
        time.sleep(0.1)
    assert database.execute_sql("SELECT COUNT(*) FROM hang_probe").fetchone()[0] == 0
    db.close()


def test_a_hang_between_transactions_is_retried_once_then_a_lost_server(database_url, proxy):
    """Outside a transaction peewee's reconnect runs the statement again on a new connection;
    while the server hangs that one times out at its handshake: bounded either way."""
    db = dbmod.open_database(_via(database_url, proxy.port), read_timeout_s=TIMEOUT_S)
    db.execute_sql("SELECT 1")
    proxy.freeze()
    took, exc = _elapsed(lambda: db.execute_sql("SELECT 1"), proxy.thaw)
    assert took < 2 * TIMEOUT_S + SLACK_S, f"took {took:.1f} s"
    assert dberrors.unreachable(exc) and dberrors.timed_out(exc), exc
    proxy.thaw()
    db.close()
    assert db.execute_sql("SELECT 1").fetchone()[0] == 1
    db.close()


def test_a_row_lock_wait_ends_as_lock_busy_before_the_read_timeout(database_url, probe_table):
    """A session's row lock waits are capped below its read timeout: a long wait for a lock
    is the server's 1205 (retried as lock busy), never taken for a lost server."""
    holder = dbmod.open_database(database_url)
    waiter = dbmod.open_database(database_url, read_timeout_s=8)
    assert waiter.execute_sql("SELECT @@SESSION.innodb_lock_wait_timeout").fetchone()[0] \
        == 8 - LOCK_WAIT_MARGIN_S
    default = dbmod.open_database(database_url)
    server = default.execute_sql("SELECT @@GLOBAL.innodb_lock_wait_timeout").fetchone()[0]
    assert default.execute_sql("SELECT @@SESSION.innodb_lock_wait_timeout").fetchone()[0] \
        == min(server, int(DEFAULT_READ_TIMEOUT_S) - LOCK_WAIT_MARGIN_S)
    default.close()
    holder.execute_sql("INSERT INTO hang_probe (id) VALUES (7)")
    with holder.atomic():
        holder.execute_sql("SELECT * FROM hang_probe WHERE id = 7 FOR UPDATE")

        def wait() -> None:
            with waiter.atomic():
                waiter.execute_sql("SELECT * FROM hang_probe WHERE id = 7 FOR UPDATE")

        took, exc = _elapsed(wait, lambda: None)  # the server ends a lock wait itself
    assert took < 8, f"the lock wait took {took:.1f} s"
    assert dberrors.classify(exc) is DbError.LOCK_BUSY and not dberrors.timed_out(exc), exc
    holder.close()
    waiter.close()


def test_the_setting_is_read_checked_and_handed_to_subprocess_workers(tmp_path, monkeypatch):
    from workers.testing.harness import write_config

    for var in ("DATABASE_URL", "AMQP_URL", "PVE_CONNECTION_FILE"):
        monkeypatch.delenv(var, raising=False)
    head = '[amqp]\nurl = "amqp://g:g@127.0.0.1/"\n[proxmox]\nbase_url = "https://pve:8006"\n' \
        'token_id = "a@pve!b"\ntoken_secret = "s"\n'
    f = tmp_path / "pvekvm.toml"
    f.write_text('[database]\nurl = "mysql://root@127.0.0.1/x"\n' + head)
    assert load_settings(f).database_read_timeout_s == DEFAULT_READ_TIMEOUT_S
    f.write_text('[database]\nurl = "mysql://root@127.0.0.1/x"\nread_timeout_s = 12\n' + head)
    s = load_settings(f)
    assert s.database_read_timeout_s == 12.0
    assert load_settings(write_config(s, tmp_path / "w.toml")).database_read_timeout_s == 12.0
    for bad in ("0", "2", '"60"', "true", "7200"):
        f.write_text(f'[database]\nurl = "mysql://root@127.0.0.1/x"\nread_timeout_s = {bad}\n'
                     + head)
        with pytest.raises(ConfigError, match=r"\[database\] read_timeout_s"):
            load_settings(f)
