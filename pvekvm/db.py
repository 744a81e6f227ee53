"""Database binding: one MySQL/MariaDB handle per process (peewee, pymysql driver), with
automatic reconnect after a server restart, and schema.sql applied on demand."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from peewee import MySQLDatabase
from playhouse.shortcuts import ReconnectMixin

from pvekvm.models import database

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"


class _ReconnectingMySQL(ReconnectMixin, MySQLDatabase):
    """Re-opens the connection when the server went away (restart, idle timeout)."""


def open_database(url: str) -> MySQLDatabase:
    """``mysql://user:pass@host:port/name`` → a peewee database (not yet connected)."""
    u = urlparse(url)
    if u.scheme not in ("mysql", "mysql+pymysql", "mariadb"):
        raise ValueError(f"unsupported database URL scheme {u.scheme!r}")
    return _ReconnectingMySQL(
        u.path.lstrip("/"),
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        charset="utf8mb4",
        connect_timeout=10,
        # Every read sees what is committed now, not a snapshot from the transaction's first
        # read: a step that waits for a lock (the clone-slot count behind the template rows)
        # must then count the work its predecessor just committed.
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )


def create_database(url: str) -> None:
    """Create the database named in ``url`` when it does not exist yet."""
    u = urlparse(url)
    server = open_database(u._replace(path="/mysql").geturl())
    server.execute_sql(f"CREATE DATABASE IF NOT EXISTS `{u.path.lstrip('/')}` "
                       "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.close()


def bind(url: str) -> MySQLDatabase:
    """Bind the models to the database at ``url`` and return it."""
    db = open_database(url)
    database.initialize(db)
    return db


def schema_statements(text: str | None = None) -> list[str]:
    """schema.sql split into statements (comments stripped)."""
    text = SCHEMA_FILE.read_text() if text is None else text
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def apply_schema(db: MySQLDatabase) -> None:
    """Create every table of schema.sql that does not exist yet."""
    for stmt in schema_statements():
        db.execute_sql(stmt)


def reset_data(db: MySQLDatabase) -> None:
    """Empty every table (tests)."""
    tables = db.get_tables()
    db.execute_sql("SET FOREIGN_KEY_CHECKS=0")
    try:
        for t in tables:
            db.execute_sql(f"TRUNCATE TABLE `{t}`")
    finally:
        db.execute_sql("SET FOREIGN_KEY_CHECKS=1")
