"""Where the tests find RabbitMQ and MariaDB: ``AMQP_URL`` / ``DATABASE_URL`` from the
environment (set by scripts/test), else testcontainers when a Docker engine answers, else the
local defaults."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOCAL_DB = "mysql://root@127.0.0.1:3306/pvekvm_test"


def docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def amqp_url() -> Iterator[str]:
    if os.environ.get("AMQP_URL") or not docker_answers():
        yield os.environ.get("AMQP_URL", LOCAL_AMQP)
        return
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
        p = rabbit.get_connection_params()
        yield f"amqp://guest:guest@{p.host}:{p.port}/%2F"


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    if os.environ.get("DATABASE_URL") or not docker_answers():
        yield os.environ.get("DATABASE_URL", LOCAL_DB)
        return
    from testcontainers.mysql import MySqlContainer

    with MySqlContainer("mariadb:10.11", username="root", password="test",
                        dbname="pvekvm_test") as mysql:
        yield (f"mysql://root:test@{mysql.get_container_host_ip()}:"
               f"{mysql.get_exposed_port(3306)}/pvekvm_test")
