"""Webhook tests and bench: settings with fast retries and short leases, and events written
through the engine's own outbox writer (workers.outbox.record), in a fresh database."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

from pvekvm import secrets
from pvekvm.config import ApiSettings, Settings
from pvekvm.models import database
from pvekvm.webhooks.config import DeliverySettings, EndpointSetting, WebhookSettings
from workers import outbox

FAST = DeliverySettings(timeout_s=1.0, lease_s=3.0, retry_first_s=0.1, retry_max_s=0.4,
                        retry_for_s=30.0, poll_s=0.05, feed_max_wait_s=5.0)
_keys = itertools.count(1)


def make_settings(tmp: Path, database_url: str, amqp_url: str,
                  endpoints: tuple[EndpointSetting, ...] = (),
                  delivery: DeliverySettings = FAST, api: ApiSettings | None = None,
                  namespace: str = "pvekvm") -> Settings:
    key = tmp / "secret.key"
    secrets.create_key(str(key))
    return Settings(database_url=database_url, amqp_url=amqp_url, namespace=namespace,
                    secret_key_file=str(key), api=api or ApiSettings(),
                    webhooks=WebhookSettings(endpoints, delivery))


def with_delivery(settings: Settings, **kw: Any) -> Settings:
    return replace(settings, webhooks=replace(
        settings.webhooks, delivery=replace(settings.webhooks.delivery, **kw)))


def emit(service_id: int | None, n: int = 1, type_: str = "operation.accepted"
         ) -> list[outbox.Pending]:
    """``n`` events of one service, each in its own commit (as the engine writes them)."""
    out = []
    for i in range(n):
        with database.atomic():
            out.append(outbox.record(type_, service_id=service_id,
                                     idempotency_key=f"k-{next(_keys)}", step=i))
    return out


def ids(pending: list[outbox.Pending]) -> list[str]:
    return [p.event_id for p in pending]
