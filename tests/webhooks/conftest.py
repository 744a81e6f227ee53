"""Webhook tests: settings with fast retries and short leases, and events written through the
engine's own outbox writer (workers.outbox.record), in a fresh database."""

from __future__ import annotations

import pytest


@pytest.fixture()
def db(clean_db):
    return clean_db
