"""Least-privilege users on the shared RabbitMQ and MariaDB (``python -m pvekvm grants``).

RabbitMQ permissions are three regexes per vhost (configure / write / read) matched against
exchange and queue names: publishing needs write on the exchange; declaring or deleting a
queue configure on it; ``queue.bind`` write on the queue and read on the exchange; consuming
read on the queue.

- **billing**: publishes to ``<ns>.orders``; declares, binds to ``<ns>.events`` and consumes
  its own queues ``<ns>.billing`` / ``<ns>.billing.<name>`` (producers watch's default name).
  It cannot publish to ``<ns>.steps`` or any delay/dead exchange, nor read a work queue.
- **api**: publishes to ``<ns>.orders`` only (``POST /v1/events``).
- **engine** (workers, scheduler, intake, operator CLI): the engine's exchanges and queues
  (``declare_topology``), not billing's queues.

MariaDB (table grants need the tables: run after ``init-db``; a table that does not exist yet
is skipped with a comment, run ``grants`` again after the upgrade that adds it):

- **admin** (``init-db``, ``load-catalog``): schema changes plus data on the database.
- **worker** (workers, scheduler, operator CLI): SELECT/INSERT/UPDATE/DELETE, no DDL.
- **api**: SELECT on the tables the API reads, INSERT on ``audit_log``, SELECT/INSERT/UPDATE
  on ``client_tokens``, ``webhook_endpoints`` and ``console_sessions`` (the console proxy
  runs as this user too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peewee import MySQLDatabase

#: what the API reads (pvekvm/apps/api): services and their operations, steps, addresses,
#: snapshots, backups, usage, and the catalog rows they name
API_READS: tuple[str, ...] = (
    "services", "operations", "step_runs", "products", "product_locations", "templates",
    "ip_addresses",
    "ip_pools", "snapshots", "backups", "backup_schedules", "traffic_usage", "dns_zones",
    "dns_records", "schema_version",
    "outbox", "webhook_deliveries", "webhook_streams",  # the pull feed, endpoints' backlog
)
API_WRITES: dict[str, str] = {
    "audit_log": "SELECT, INSERT",  # SELECT: the client routes count recent rows (rate limits)
    "client_tokens": "SELECT, INSERT, UPDATE",
    "webhook_endpoints": "SELECT, INSERT, UPDATE",  # POST/DELETE /v1/webhooks
    # console tokens (issue 27): the API mints and cuts; the console proxy, which may run as
    # this user, claims, heart-beats and ends them (and reads services, client_tokens)
    "console_sessions": "SELECT, INSERT, UPDATE",
}
WORKER_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
ADMIN_PRIVILEGES = ("SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, "
                    "CREATE VIEW, SHOW VIEW, TRIGGER")
_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str


def rabbitmq_permissions(namespace: str) -> dict[str, Permissions]:
    """The (configure, write, read) regexes of each role on the vhost."""
    ns = re.escape(namespace)
    own = rf"{ns}\.billing(\..+)?"
    engine = rf"^{ns}\.(orders|steps|events|dead|step\..+|delay\..+|wait\..+)$"
    return {
        "billing": Permissions(configure=f"^{own}$", write=rf"^({ns}\.orders|{own})$",
                               read=rf"^({ns}\.events|{own})$"),
        "api": Permissions(configure="^$", write=rf"^{ns}\.orders$", read="^$"),
        "engine": Permissions(configure=engine, write=engine, read=engine),
    }


def rabbitmq_commands(vhost: str, namespace: str,
                      users: dict[str, tuple[str, str]]) -> list[list[str]]:
    """``rabbitmqctl`` argv lists creating each role's user (``users``: role -> (name,
    password)) with its permissions on ``vhost``."""
    perms = rabbitmq_permissions(namespace)
    out = []
    for role, (name, password) in users.items():
        p = perms[role]
        out.append(["rabbitmqctl", "add_user", name, password])
        out.append(["rabbitmqctl", "set_permissions", "-p", vhost, name,
                    p.configure, p.write, p.read])
    return out


def _ident(value: str) -> str:
    if not _IDENT.fullmatch(value):
        raise ValueError(f"not a plain MariaDB name: {value!r}")
    return value


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def mariadb_statements(database: str, users: dict[str, tuple[str, str]], host: str,
                       tables: set[str]) -> list[str]:
    """SQL creating each role's user (``users``: role -> (name, password)) with its grants on
    ``database``; ``tables``: those that exist (a grant on a missing one becomes a comment)."""
    db = f"`{_ident(database)}`"
    out = []
    for role, (name, password) in users.items():
        who = f"{_quote(_ident(name))}@{_quote(host)}"
        out.append(f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY {_quote(password)}")
        if role == "admin":
            out.append(f"GRANT {ADMIN_PRIVILEGES} ON {db}.* TO {who}")
        elif role == "worker":
            out.append(f"GRANT {WORKER_PRIVILEGES} ON {db}.* TO {who}")
        elif role == "api":
            grants = [("SELECT", t) for t in API_READS] + [(p, t) for t, p in API_WRITES.items()]
            for privileges, table in grants:
                line = f"GRANT {privileges} ON {db}.`{table}` TO {who}"
                out.append(line if table in tables else
                           f"-- {line}  (table missing: run grants again after init-db)")
        else:
            raise ValueError(f"unknown MariaDB role {role!r}")
    return out


def existing_tables(db: MySQLDatabase, database: str) -> set[str]:
    rows = db.execute_sql("SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = %s", (database,)).fetchall()
    return {r[0] for r in rows}
