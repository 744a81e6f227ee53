"""Standard Webhooks signatures (https://www.standardwebhooks.com): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 under the secret's bytes (``whsec_`` +
base64), sent as ``v1,<base64>``; one per valid secret, space-separated, so a receiver that
knows either the new or the old secret of a rotation verifies. Signed by the reference
``standardwebhooks`` package, which receivers in other languages mirror."""

from __future__ import annotations

import base64
import secrets as random
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from pvekvm.webhooks.config import SECRET_PREFIX

USER_AGENT = "pvekvm-webhooks/1"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(32)).decode()


def headers(event_id: str, body: bytes, secrets: list[str] | tuple[str, ...],
            now: datetime | None = None) -> dict[str, str]:
    """The request headers of one attempt: a fresh timestamp each time (a receiver's replay
    window, 5 minutes in the reference verifier, is measured from it); ``webhook-id`` is the
    event's id on every attempt, so receivers de-duplicate by it."""
    now = now or datetime.now(UTC)
    signatures = " ".join(Webhook(s).sign(event_id, now, body) for s in secrets)
    return {"webhook-id": event_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": USER_AGENT}
