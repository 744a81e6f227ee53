"""Least privilege (pvekvm.grants), on the real broker and database: each user does what its
program needs and is refused the rest. Users get unique names and are deleted afterwards."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import pika
import pymysql
import pytest
from pika.exceptions import ChannelClosedByBroker

from producers.api import OrderClient
from pvekvm import db as dbmod
from pvekvm import grants, messaging
from pvekvm.secrets import generate_password

ACCESS_REFUSED = 403
TABLEACCESS_DENIED = 1142


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def amqp_roles(amqp_url: str, namespace: str) -> Iterator[dict[str, str]]:
    """billing, api and engine users on the tests' vhost for ``namespace``: role -> URL."""
    u = urlparse(amqp_url)
    vhost = unquote(u.path[1:]) or "/"
    tag = uuid.uuid4().hex[:8]
    users = {r: (f"pvekvm_t_{r}_{tag}", generate_password(20)) for r in ("billing", "api",
                                                                          "engine")}
    try:
        for argv in grants.rabbitmq_commands(vhost, namespace, users):
            _rabbitmqctl(*argv[1:])
        yield {r: u._replace(netloc=f"{n}:{p}@{u.hostname}:{u.port or 5672}").geturl()
               for r, (n, p) in users.items()}
    finally:
        for name, _ in users.values():
            subprocess.run(["rabbitmqctl", "delete_user", name], capture_output=True,
                           timeout=60, check=False)


@pytest.fixture()
def amqp_users(amqp_url: str, topology) -> Iterator[dict[str, str]]:
    with amqp_roles(amqp_url, topology.namespace) as urls:
        yield urls


def _refused(url: str, action) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(ChannelClosedByBroker) as info:
            action(ch)
        return info.value.reply_code
    finally:
        if conn.is_open:
            conn.close()


def test_billing_publishes_orders_reads_its_events_and_nothing_else(amqp_url, topology,
                                                                     amqp_users) -> None:
    billing = amqp_users["billing"]
    # refused: the steps exchange, a delay exchange, the dead exchange, reading a work queue
    for exchange in (topology.steps_exchange, topology.delay_exchange(250),
                     topology.dead_exchange):
        assert _refused(billing, lambda ch, ex=exchange: ch.basic_publish(
            ex, "ip", b"{}")) == ACCESS_REFUSED
    for queue in (topology.step_queue("ip"), topology.orders_queue, topology.dead_queue):
        assert _refused(billing, lambda ch, q=queue: ch.basic_get(q)) == ACCESS_REFUSED
    assert _refused(billing, lambda ch: ch.queue_delete(topology.orders_queue)) \
        == ACCESS_REFUSED

    # allowed: an order, through the producers' client (it leaves declaring to the engine)
    with OrderClient(billing, topology.namespace) as client:
        client.suspend(service_id=4242)
    conn = messaging.connect(amqp_url)  # the engine's side: the order is in its queue
    try:
        ch = conn.channel()
        depth = ch.queue_declare(topology.orders_queue, passive=True).method.message_count
        assert depth == 1
        for method, _, body in ch.consume(topology.orders_queue, inactivity_timeout=10):
            assert method is not None and json.loads(body)["service_id"] == 4242
            ch.basic_ack(method.delivery_tag)
            break
        ch.cancel()
    finally:
        conn.close()

    # allowed: its own queue bound to the events exchange, and reading what the engine sends
    queue = f"{topology.namespace}.billing"
    conn = pika.BlockingConnection(pika.URLParameters(billing))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue, topology.events_exchange, routing_key="#")
        engine = messaging.Publisher(amqp_users["engine"], topology)
        engine.publish_event("service.ready", b'{"service_id": 4242}', "ev-1")
        engine.close()
        method = None
        for _ in range(50):  # at most 5 s
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                break
            conn.sleep(0.1)
        assert method is not None and json.loads(body) == {"service_id": 4242}
        ch.queue_delete(queue)
    finally:
        conn.close()


def test_api_user_may_only_publish_orders(topology, amqp_users) -> None:
    api = amqp_users["api"]
    assert _refused(api, lambda ch: ch.basic_publish(topology.steps_exchange, "ip", b"{}")) \
        == ACCESS_REFUSED
    assert _refused(api, lambda ch: ch.basic_get(topology.orders_queue)) == ACCESS_REFUSED
    with OrderClient(api, topology.namespace) as client:
        client.suspend(service_id=4243)


def test_engine_user_declares_its_topology_but_not_billings_queues(topology,
                                                                   amqp_users) -> None:
    engine = amqp_users["engine"]
    assert messaging.declare_if_allowed(engine, topology) is True
    assert _refused(engine, lambda ch: ch.queue_declare(f"{topology.namespace}.billing")) \
        == ACCESS_REFUSED


# ------------------------------------------------------------------------------ MariaDB

@contextlib.contextmanager
def db_roles(root_db, database_url: str) -> Iterator[dict[str, str]]:
    """admin, worker and api users on the tests' database (created as ``root_db``'s user):
    role -> URL."""
    u = urlparse(database_url)
    name = dbmod.database_name(database_url)
    tag = uuid.uuid4().hex[:6]
    users = {r: (f"pvekvm_t_{r}_{tag}", generate_password(20)) for r in ("admin", "worker",
                                                                          "api")}
    tables = grants.existing_tables(root_db, name)
    cursor = root_db.connection().cursor()  # as the administrator (the tests' root)
    try:
        for stmt in grants.mariadb_statements(name, users, "%", tables):
            if not stmt.startswith("--"):
                cursor.execute(stmt)
        yield {r: u._replace(netloc=f"{n}:{p}@{u.hostname}:{u.port or 3306}").geturl()
               for r, (n, p) in users.items()}
    finally:
        cursor = root_db.connection().cursor()
        for n, _ in users.values():
            cursor.execute(f"DROP USER IF EXISTS '{n}'@'%'")


@pytest.fixture()
def db_users(database_url: str, clean_db) -> Iterator[dict[str, str]]:
    with db_roles(clean_db, database_url) as urls:
        yield urls


def _sql(url: str, statement: str) -> int | None:
    """Run ``statement`` as the URL's user: None when allowed, else the MariaDB error code."""
    u = urlparse(url)
    conn = pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username,
                           password=unquote(u.password or ""), database=u.path[1:],
                           autocommit=True)
    try:
        conn.cursor().execute(statement)
        return None
    except pymysql.err.MySQLError as exc:
        return exc.args[0]
    finally:
        conn.close()


def test_api_database_user_reads_and_audits_but_cannot_change_services(db_users) -> None:
    api = db_users["api"]
    assert _sql(api, "SELECT id, password_enc FROM services") is None
    assert _sql(api, "SELECT * FROM operations") is None
    assert _sql(api, "INSERT INTO audit_log (event, detail) VALUES ('t', 'grant test')") is None
    assert _sql(api, "UPDATE services SET status = 'ready'") == TABLEACCESS_DENIED
    assert _sql(api, "DELETE FROM audit_log") == TABLEACCESS_DENIED
    assert _sql(api, "INSERT INTO operations (service_id) VALUES (1)") == TABLEACCESS_DENIED
    assert _sql(api, "SELECT * FROM dns_providers") == TABLEACCESS_DENIED  # DNS API keys


def test_worker_database_user_changes_rows_but_not_the_schema(db_users) -> None:
    worker = db_users["worker"]
    assert _sql(worker, "UPDATE services SET status = 'ready' WHERE id = 0") is None
    assert _sql(worker, "DELETE FROM audit_log WHERE id = 0") is None
    assert _sql(worker, "CREATE TABLE grant_probe (id INT)") == TABLEACCESS_DENIED
    assert _sql(worker, "DROP TABLE audit_log") == TABLEACCESS_DENIED
    assert _sql(worker, "ALTER TABLE services ADD COLUMN x INT") == TABLEACCESS_DENIED


def test_admin_database_user_brings_the_schema_up_to_date(db_users) -> None:
    admin = db_users["admin"]
    db = dbmod.open_database(admin)
    try:
        assert dbmod.apply_schema(db) == dbmod.latest_version()
    finally:
        db.close()
    assert _sql(admin, "CREATE TABLE grant_probe (id INT)") is None
    assert _sql(admin, "DROP TABLE grant_probe") is None


def test_a_table_grant_waits_for_its_table() -> None:
    """MariaDB refuses a grant on a table that does not exist: such a line is a comment."""
    users = {"api": ("a", "p")}
    lines = grants.mariadb_statements("d", users, "%", {"services"})
    assert "GRANT SELECT ON `d`.`services` TO 'a'@'%'" in lines
    assert any(ln.startswith("-- GRANT SELECT, INSERT, UPDATE ON `d`.`client_tokens`")
               for ln in lines)
    with pytest.raises(ValueError):
        grants.mariadb_statements("d`; DROP DATABASE x; --", users, "%", set())
