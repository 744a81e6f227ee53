"""``language_change`` through the engine (RabbitMQ, MariaDB, pvesim, real SMTP): a client who
ordered in German switches to Arabic; billing hears the operation with the new language, the
service keeps it, and the next mail (a password reset) arrives in Arabic, right to left; a
malformed language is refused with its reason and changes nothing; a suspended service may
change it, a terminated one may not."""

from __future__ import annotations

import json
from typing import Any

from producers.api import OrderClient
from pvekvm import secrets
from pvekvm.mail import LRI, PDI
from pvekvm.models import Operation, Service
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
)

SID = 5151


def _done(kind: str) -> bool:
    return Operation.select().where((Operation.service_id == SID) & (Operation.kind == kind)
                                    & (Operation.status == "done")).exists()


def test_the_next_mail_after_a_language_change_is_in_the_new_language(settings, sink):
    events = BillingQueue(settings)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=SID, client_id=8, product="vps-small",
                           email="kunde@example.com", language="german")
            try:
                wait_until(all_ready([SID]), 60, "deploy")
            except AssertionError:
                raise AssertionError(describe_ops([SID])) from None
            ready = sink.wait_for(lambda m: "ist bereit" in m.subject, 5)
            assert ready.message["Content-Language"] == "de"

            order = billing.language_change(service_id=SID, language="Arabic")
            wait_until(lambda: _done("language_change"), 30, "language_change done")
            assert Service.get_by_id(SID).language == "ar"
            for kind in ("operation.accepted", "operation.completed"):
                def of_kind(e: dict[str, Any], kind: str = kind) -> bool:
                    return e["type"] == kind and e.get("kind") == "language_change"
                got = events.wait_for(of_kind, 10, kind)
                assert got["language"] == "ar" and got["service_id"] == SID
                assert got["idempotency_key"] == order.idempotency_key
            done = events.wait_for(lambda e: e["type"] == "operation.completed"
                                   and e.get("kind") == "language_change", 1, "completed")
            assert done["status"] == "ready"  # the service's status is untouched

            billing.publish_raw(json.dumps({
                "version": 1, "type": "language_change", "idempotency_key": "lc-bad",
                "service_id": SID, "language": "ar;rm -rf /"}).encode(),
                "order.language_change")
            refused = events.wait_for(lambda e: e["type"] == "event.refused"
                                      and e["idempotency_key"] == "lc-bad", 10, "refused")
            assert refused["reason"].startswith("field 'language': not a language tag")
            assert "rm -rf" not in refused["reason"]  # the reason never echoes the value

            billing.reset_password(service_id=SID)
            wait_until(lambda: _done("reset_password"), 60, "reset_password done")
            password_enc = Service.get_by_id(SID).password_enc
            assert password_enc is not None
            password = secrets.decrypt(settings.secret_key_file, password_enc)
            mail = sink.wait_for(lambda m: password in m.body, 5)
            assert Service.get_by_id(SID).language == "ar"  # the refused order changed nothing

            billing.suspend(service_id=SID)  # a suspended client may still change it
            billing.language_change(service_id=SID, language="he")
            wait_until(lambda: Service.get_by_id(SID).language == "he", 30, "he while suspended")
            assert Service.get_by_id(SID).status == "suspended"

            billing.terminate(service_id=SID)  # a terminated service's language is over
            late = billing.language_change(service_id=SID, language="tr")
            refused = events.wait_for(lambda e: e["type"] == "event.refused" and
                                      e["idempotency_key"] == late.idempotency_key, 30, "late")
            assert "terminated" in refused["reason"]
            assert Service.get_by_id(SID).language == "he"
    finally:
        events.close()
    assert mail.rcpt_tos == ["kunde@example.com"]
    assert mail.message["Content-Language"] == "ar"
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.body.startswith("مرحبًا") and f"{LRI}{password}{PDI}" in mail.body
    html = mail.message.get_body(preferencelist=("html",))
    assert html is not None and 'dir="rtl"' in html.get_content()
    assert "كلمة مرور جديدة" in mail.subject
