"""Database binding: one MySQL/MariaDB handle per process (peewee, pymysql driver), with
automatic reconnect after a server restart; creating the database, applying schema.sql and the
numbered migrations (the version applied is recorded in ``schema_version``).

``DATABASE_URL`` names one server (``mysql://user:pass@host:port/name``) or the nodes of a
MariaDB Galera cluster, comma-separated in the host part
(``mysql://user:pass@db1:3306,db2:3306,db3:3306/name``): then every process writes through one
node at a time, the first in that order that is synced (:mod:`pvekvm.galera`).

Every connection is bounded (:mod:`pvekvm.dburl`): a server that stops answering without
closing its sockets ends a statement after ``read_timeout_s`` (``[database] read_timeout_s``)
as a lost server, instead of blocking its process for ever."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql
from peewee import DatabaseError, MySQLDatabase

from pvekvm.dburl import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    _ReconnectingMySQL,
    longer_reads,
    parse_url,
)
from pvekvm.models import database

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the version schema.sql had when versions started being recorded: a database holding tables
#: but no version row is at this version
BASELINE_VERSION = 1
_MIGRATION = re.compile(r"(\d{4})_([\w-]+)\.sql")
#: a schema change's statements may run this long (an ``ALTER TABLE`` of a large table, the
#: schema lock's 120 s wait) whatever the connection's read timeout
SCHEMA_READ_TIMEOUT_S = 3600.0


class DatabaseSetupError(RuntimeError):
    """The database cannot be created or brought up to date; the message says why and what to
    run instead."""


_CONNECTION: dict[str, Any] = dict(
    charset="utf8mb4",
    # Every read sees what is committed now, not a snapshot from the transaction's first
    # read: a step that waits for a lock (the clone-slot count behind the template rows)
    # must then count the work its predecessor just committed.
    init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
)


def open_database(url: str, causal_reads: bool = False,
                  read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S) -> MySQLDatabase:
    """The database at ``url`` as a peewee database (not yet connected). Several nodes: a
    :class:`pvekvm.galera.GaleraDatabase` writing through one of them; ``causal_reads``: its
    every read waits until the node has applied every commit the cluster made before
    (``wsrep_sync_wait``: the API and the reconciler, whose reads must see the last commit).
    ``read_timeout_s``: how long a statement may go unanswered before the server is taken
    for lost (the setting ``[database] read_timeout_s``; None: for ever)."""
    target = parse_url(url)
    if len(target.nodes) > 1:
        from pvekvm.galera import GaleraDatabase

        return GaleraDatabase(target, causal_reads=causal_reads,
                              read_timeout_s=read_timeout_s, **_CONNECTION)
    # the handshake within the connect timeout, and never longer than a statement may take
    handshake = min(DEFAULT_CONNECT_TIMEOUT_S, read_timeout_s or DEFAULT_CONNECT_TIMEOUT_S)
    return _ReconnectingMySQL(target.name, **target.connect_args(), connect_timeout=handshake,
                              read_timeout_s=read_timeout_s, **_CONNECTION)


def database_name(url: str) -> str:
    return urlparse(url).path.lstrip("/")


def create_sql(name: str) -> str:
    return (f"CREATE DATABASE IF NOT EXISTS `{name}` "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")


def create_database(url: str) -> bool:
    """Create the database named in ``url`` when it does not exist yet; True when created.
    DatabaseSetupError (with the SQL line an administrator can run) when not allowed."""
    target, name = parse_url(url), database_name(url)
    if not name:
        raise DatabaseSetupError(f"the database URL names no database: {redact(url)}")
    from pvekvm.galera import connect_writer

    conn = connect_writer(target, connect_timeout=10)
    user = target.user
    try:
        with conn.cursor() as cur:
            exists = cur.execute("SHOW DATABASES LIKE %s", (name.replace("_", "\\_"),))
            if exists:
                return False
            try:
                cur.execute(create_sql(name))
            except pymysql.err.OperationalError as exc:
                raise DatabaseSetupError(
                    f"database `{name}` does not exist and user {user!r} may "
                    f"not create it ({exc.args[-1]}); as a MariaDB administrator run: "
                    f"{create_sql(name)}; GRANT ALL ON `{name}`.* TO "
                    f"'{user}'@'%';") from None
            return True
    finally:
        conn.close()


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    u = urlparse(url)
    if u.password is None:
        return url
    return u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@", 1)).geturl()


def bind(url: str, causal_reads: bool = False,
         read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S) -> MySQLDatabase:
    """Bind the models to the database at ``url`` and return it (``causal_reads``,
    ``read_timeout_s``: see :func:`open_database`)."""
    db = open_database(url, causal_reads, read_timeout_s)
    database.initialize(db)
    return db


def schema_statements(text: str | None = None) -> list[str]:
    """schema.sql split into statements (comments stripped)."""
    text = SCHEMA_FILE.read_text() if text is None else text
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    """(version, name, file) of every migration, in order (files ``NNNN_name.sql``)."""
    found = []
    for f in directory.glob("*.sql"):
        m = _MIGRATION.fullmatch(f.name)
        if m is None:
            raise DatabaseSetupError(f"{f}: a migration must be named NNNN_name.sql")
        found.append((int(m.group(1)), m.group(2), f))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions) or any(v <= BASELINE_VERSION for v in versions):
        raise DatabaseSetupError(f"{directory}: migration numbers must be unique and start "
                                 f"after {BASELINE_VERSION}")
    return found


def latest_version(directory: Path = MIGRATIONS_DIR) -> int:
    return max([BASELINE_VERSION] + [v for v, _, _ in migrations(directory)])


def schema_version(db: MySQLDatabase) -> int | None:
    """The recorded schema version; None when the schema was never applied."""
    if "schema_version" not in db.get_tables():
        return None
    row = db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] if row and row[0] is not None else None


def apply_schema(db: MySQLDatabase, directory: Path = MIGRATIONS_DIR) -> int:
    """Bring the database to the latest schema version and return it. Safe to run again and
    from several processes at once (a named lock serialises them).

    A database without tables gets schema.sql and the latest version at once (schema.sql always
    describes it); one with tables but no version row is at BASELINE_VERSION; then every newer
    migration runs in order, each recorded when its statements succeeded."""
    steps = migrations(directory)
    db.connect(reuse_if_open=True)
    with longer_reads(db.connection(), SCHEMA_READ_TIMEOUT_S):
        return _apply_schema(db, steps)


def _apply_schema(db: MySQLDatabase, steps: list[tuple[int, str, Path]]) -> int:
    latest = max([BASELINE_VERSION] + [v for v, _, _ in steps])
    _total_order_ddl(db)
    lock = f"pvekvm_schema:{db.database}"[:64]
    if not db.execute_sql("SELECT GET_LOCK(%s, 120)", (lock,)).fetchone()[0]:
        raise DatabaseSetupError("another process holds the schema lock for 120 s")
    try:
        fresh = not (set(db.get_tables()) - {"schema_version"})
        current = schema_version(db)
        if current is None:
            for stmt in schema_statements():
                db.execute_sql(stmt)
            current = latest if fresh else BASELINE_VERSION
            _record(db, current, "schema.sql" if fresh else "baseline")
        elif current > latest:
            raise DatabaseSetupError(
                f"database `{db.database}` is at schema version {current}, newer than this "
                f"code knows ({latest}): upgrade pvekvm")
        else:
            for stmt in schema_statements():  # tables added to schema.sql without a migration
                db.execute_sql(stmt)
        for version, name, f in steps:
            if version > current:
                for stmt in schema_statements(f.read_text()):
                    db.execute_sql(stmt)
                _record(db, version, name)
                current = version
        return current
    finally:
        db.execute_sql("SELECT RELEASE_LOCK(%s)", (lock,))


def _total_order_ddl(db: MySQLDatabase) -> None:
    """On a Galera node: schema changes in Total Order Isolation (``wsrep_OSU_method=TOI``,
    the default, set here whatever the server's default is): each statement runs on every node
    at the same point of the replication stream, so no node ever applies rows to a table shape
    the others do not have. The named lock above is a node's own on Galera; it serialises
    init-db processes because every process writes through the same node (pvekvm/galera.py)."""
    try:
        wsrep_on = db.execute_sql("SELECT @@wsrep_on").fetchone()[0]
    except DatabaseError:  # a server without Galera support (no such variable)
        return
    if wsrep_on:
        db.execute_sql("SET SESSION wsrep_OSU_method = 'TOI'")


def _record(db: MySQLDatabase, version: int, name: str) -> None:
    db.execute_sql("INSERT IGNORE INTO schema_version (version, name) VALUES (%s, %s)",
                   (version, name))


def reset_data(db: MySQLDatabase) -> None:
    """Empty every table but the schema version (tests)."""
    tables = [t for t in db.get_tables() if t != "schema_version"]
    db.execute_sql("SET FOREIGN_KEY_CHECKS=0")
    try:
        for t in tables:
            db.execute_sql(f"TRUNCATE TABLE `{t}`")
    finally:
        db.execute_sql("SET FOREIGN_KEY_CHECKS=1")


def values(sql: str, *args: object) -> tuple[Any, ...] | None:
    """The first row as a tuple (None when there is none): several lookups in one round trip
    (``SELECT (SELECT ...), (SELECT ...)``)."""
    row = database.execute_sql(sql, args).fetchone()
    return tuple(row) if row else None


def scalar(sql: str, *args: object) -> Any:
    """The first column of the first row (None when there is none), for the hot-path lookups
    that need one value: a statement written out costs a fraction of a peewee query that
    builds its SQL and reads every column."""
    row = database.execute_sql(sql, args).fetchone()
    return row[0] if row else None
