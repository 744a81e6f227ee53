"""Containers mode really runs on containers: the broker and database the fixtures hand out are
testcontainers of the locally built images, on the host network, answering real clients."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pika
import pymysql
import pytest

from tests import services

if TYPE_CHECKING:
    from docker.models.containers import Container

pytestmark = pytest.mark.skipif(not services.containers_mode(),
                                reason="containers mode only (scripts/test --containers)")


def _our_containers() -> dict[str, Container]:
    import docker

    client = docker.from_env()
    found = client.containers.list(filters={"label": f"pvekvm.test={services.test_name()}"})
    return {c.labels["pvekvm.service"]: c for c in found}


def test_broker_and_database_are_local_image_containers_on_the_host_network(
        amqp_url, database_url):
    containers = _our_containers()
    for service in ("rabbitmq", "mariadb"):
        c = containers[service]
        assert c.status == "running"
        assert services.IMAGES[service] in c.image.tags
        assert c.attrs["HostConfig"]["NetworkMode"] == "host"
    # not the machine's own services
    assert urlparse(amqp_url).port != 5672
    assert urlparse(database_url).port != 3306


def test_the_containers_answer_real_clients(amqp_url, database):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        assert conn._impl.server_properties["product"] == "RabbitMQ"
    finally:
        conn.close()
    row = database.execute_sql("SELECT VERSION(), DATABASE()").fetchone()
    assert "MariaDB" in row[0] and row[1] == services.test_name()
    u = urlparse(os.environ.get("PDNS_API_URL", ""))
    assert u.port and u.port != 8081  # PowerDNS moved to the container's reserved port too


def test_database_in_the_container_takes_connections_from_the_host_as_root(database_url):
    u = urlparse(database_url)
    conn = pymysql.connect(host=u.hostname, port=u.port, user="root", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@port")
            assert cur.fetchone()[0] == u.port
    finally:
        conn.close()
