"""A deploy end to end with every party on its least-privilege user (pvekvm.grants): billing
orders with its RabbitMQ user and hears ``service.ready`` on its own queue; the workers run on
the engine's RabbitMQ user and the workers' MariaDB user (no DDL)."""

from __future__ import annotations

import json
from dataclasses import replace

import pika

from producers.api import OrderClient
from pvekvm import db as dbmod
from pvekvm.models import Service
from tests.test_grants import amqp_roles, db_roles
from workers.testing.harness import InProcessWorkers, all_ready, wait_until


def test_a_deploy_runs_with_each_party_on_its_own_user(settings, amqp_url, database_url,
                                                       clean_db, sim):
    with amqp_roles(amqp_url, settings.namespace) as mq, \
            db_roles(clean_db, database_url) as sql:
        billing = pika.BlockingConnection(pika.URLParameters(mq["billing"]))
        ch = billing.channel()
        queue = f"{settings.namespace}.billing"
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue, f"{settings.namespace}.events", routing_key="service.*")
        engine = replace(settings, amqp_url=mq["engine"], database_url=sql["worker"])
        dbmod.bind(sql["worker"])  # the models now run as the workers' user
        try:
            with InProcessWorkers(engine, concurrency=4), \
                    OrderClient(mq["billing"], settings.namespace) as client:
                client.create(service_id=7301, client_id=3, product="vps-small",
                              email="e@example.com")
                wait_until(all_ready([7301]), 60, "deploy")

            def ready() -> dict | None:
                method, _, body = ch.basic_get(queue, auto_ack=True)
                event = json.loads(body) if method else None
                return event if event and event["type"] == "service.ready" else None
            event = wait_until(ready, 30, "service.ready on billing's queue", db=False)
            assert event["service_id"] == 7301
            assert Service.get_by_id(7301).status == "ready"
        finally:
            dbmod.bind(database_url)
            ch.queue_delete(queue)
            billing.close()
