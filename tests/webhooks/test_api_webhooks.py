"""``/v1/webhooks`` and the pull feed ``GET /v1/events`` over HTTP, per billing token: each
brand registers, lists and deletes its own endpoints, receives and reads only its own
services' events (the same event ids and bytes as the exchange), and cannot point an endpoint
at the engine's own network."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pika
import pytest

from pvekvm import messaging
from pvekvm.apps.api.auth import hash_token
from pvekvm.config import ApiSettings
from pvekvm.webhooks.signing import new_secret
from tests.api.server import ApiServer
from workers import outbox, webhooks
from workers.testing.harness import wait_until
from workers.testing.webhook_receiver import Receiver
from workers.testing.webhooks import emit, ids, make_settings, with_delivery

A, B, OPS = (f"{n}-{uuid.uuid4().hex}" for n in ("brand-a", "brand-b", "ops"))
API = ApiSettings(tokens=(("brand-a", hash_token(A)), ("brand-b", hash_token(B)),
                          ("ops", hash_token(OPS))),
                  scopes=(("brand-a", ((100, 199),)), ("brand-b", ((200, 299),))))


@pytest.fixture()
def env(db, tmp_path, database_url, amqp_url, topology):
    settings = with_delivery(make_settings(tmp_path, database_url, amqp_url, api=API,
                                           namespace=topology.namespace),
                             api_allowed_networks=("127.0.0.1/32",))
    with ApiServer(settings) as api:
        yield settings, api


def _register(api: ApiServer, token: str, url: str, **body: object):
    return api.post("/v1/webhooks", token, json={"name": "hook", "url": url, **body})


REFUSED = ["http://127.0.0.2:8080/", "http://169.254.169.254/latest/meta-data/",
           "http://10.0.0.1/", "http://localhost:15672/", "http://[::1]/",
           "http://[::ffff:127.0.0.2]/", "http://user:pw@example.net/", "ftp://example.net/",
           "http://0.0.0.0/", "http://2130706433/", "http://0x7f.0.0.1/",
           "http://[fe80::1%25eth0]/", "http://127.1/"]


def test_an_endpoint_the_allow_rule_refuses_is_refused_with_the_reason(env):
    _, api = env
    for url in REFUSED:
        r = _register(api, A, url)
        assert r.status_code == 422, (url, r.text)
        assert "url" in r.json()["detail"], r.text
    assert api.get("/v1/webhooks", A).json() == []
    assert _register(api, A, "http://127.0.0.1:9/").status_code == 201  # the allowed network


def test_each_brand_gets_and_reads_only_its_own_services_events(env, amqp_url):
    settings, api = env
    secret_a, secret_b = new_secret(), new_secret()
    with Receiver(secret_a) as ra, Receiver(secret_b) as rb:
        created = {}
        for name, receiver, token, secret in (("a", ra, A, secret_a), ("b", rb, B, secret_b)):
            r = _register(api, token, receiver.url, secret=secret)
            assert r.status_code == 201 and r.json()["secret"] == secret, r.text
            created[name] = r.json()
        # another brand's endpoint does not exist for this token
        for method in (api.get, api.delete):
            assert method(f"/v1/webhooks/{created['b']['id']}", A).status_code == 404
        assert [e["id"] for e in api.get("/v1/webhooks", A).json()] == [created["a"]["id"]]
        assert _register(api, A, ra.url).status_code == 409  # name taken

        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            ch = conn.channel()
            queue = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(queue, settings.namespace + ".events", "#")
            publisher = messaging.Publisher(amqp_url, messaging.Topology(settings.namespace))
            mine, theirs = emit(150, 3), emit(250, 2)
            unnamed = emit(None, 1, "event.refused")
            outbox.publish(mine + theirs + unnamed, publisher)
            publisher.close()
            on_exchange = {}
            for _ in range(6):
                method, props, body = next(ch.consume(queue, inactivity_timeout=5))
                on_exchange[props.message_id] = body
                ch.basic_ack(method.delivery_tag)

            with webhooks.Deliverer(settings, threads=2):
                wait_until(lambda: len(ra.acked_ids()) == 3 and len(rb.acked_ids()) == 2, 20,
                           "each brand's events delivered")
                feed_a = api.get("/v1/events", A).json()
                feed_ops = api.get("/v1/events", OPS).json()
        time.sleep(0.3)  # anything else would have arrived by now
        assert ra.per_service() == {150: ids(mine)} and rb.per_service() == {250: ids(theirs)}
        assert all(r.verified for r in ra.received + rb.received)
        assert [e["event_id"] for e in feed_a["events"]] == ids(mine)
        every = mine + theirs + unnamed
        assert [e["event_id"] for e in feed_ops["events"]] == ids(every)
        # the feed, the webhooks and the exchange carry the same event, id and JSON
        for p in mine:
            (hook,) = {r.body for r in ra.acked() if r.event["event_id"] == p.event_id}
            assert hook == on_exchange[p.event_id] == p.body
        assert [e for e in feed_a["events"]] == [json.loads(p.body) for p in mine]


def test_the_feed_pages_with_stable_cursors_and_long_polls(env):
    settings, api = env
    events = emit(120, 7) + emit(220, 3) + emit(130, 1)
    mine = [p for p in events if p.body and json.loads(p.body)["service_id"] < 200]
    with webhooks.Deliverer(settings, threads=1):
        wait_until(lambda: len(api.get("/v1/events", OPS).json()["events"]) == 11, 10,
                   "every event numbered")
        pages, after = [], None
        while True:
            query = {"limit": 3} | ({"after": after} if after else {})
            page = api.get("/v1/events", A, params=query).json()
            again = api.get("/v1/events", A, params=query).json()
            assert again == page  # stable: the same cursor, the same events
            pages.append(page)
            after = page["next_cursor"]
            if not page["has_more"]:
                break
        got = [e["event_id"] for p in pages for e in p["events"]]
        assert got == ids(mine) and [len(p["events"]) for p in pages] == [3, 3, 2]
        # caught up: a long poll returns when the next event of the brand comes
        threading.Timer(0.5, lambda: emit(140, 1)).start()
        started = time.monotonic()
        page = api.get("/v1/events", A, params={"after": after, "wait": 5}).json()
        took = time.monotonic() - started
        assert [e["service_id"] for e in page["events"]] == [140] and 0.4 < took < 3
        # nothing comes: the wait ends at its bound
        started = time.monotonic()
        empty = api.get("/v1/events", A, params={"after": page["next_cursor"], "wait": 0.5})
        assert empty.json()["events"] == [] and 0.4 < time.monotonic() - started < 2
    for bad in ("AAAAAAAAAAA"[:10] + "!", "_" * 11, "not-a-cursor"):
        r = api.get("/v1/events", A, params={"after": bad})
        assert r.status_code == 422, (bad, r.text)


def test_rotation_over_the_api_signs_with_both_secrets_then_the_new_one_only(env):
    settings, api = env
    with Receiver("") as receiver:
        created = _register(api, A, receiver.url).json()  # a secret is generated, shown once
        receiver.secret = old = created["secret"]
        assert "secret" not in api.get(f"/v1/webhooks/{created['id']}", A).json()
        rotate = f"/v1/webhooks/{created['id']}/rotate-secret"
        r = api.post(rotate, A, json={})
        assert r.status_code == 200 and r.json()["signing_secrets"] == 2
        new = r.json()["secret"]
        first = emit(160, 1)
        with webhooks.Deliverer(settings, threads=1):  # the receiver still knows the old one
            wait_until(lambda: len(receiver.acked_ids()) == 1, 10, "delivered")
        receiver.secret = new
        second = emit(160, 1)
        with webhooks.Deliverer(settings, threads=1):  # and now it knows the new one only
            wait_until(lambda: len(receiver.acked_ids()) == 2, 10, "delivered")
        assert receiver.per_service() == {160: ids(first + second)}
        assert api.post(rotate, A, json={"keep_previous": False}).json()["signing_secrets"] == 1
        emit(160, 1)
        with webhooks.Deliverer(settings, threads=1):  # the new one is gone as well
            wait_until(lambda: len(receiver.received) > 2, 10, "tried")
        assert not receiver.received[-1].verified and len(receiver.acked_ids()) == 2
        assert old != new
    assert api.post(rotate, A, json={"secret": "whsec_" + "A" * 88}).status_code == 422  # 66 bytes
    assert api.post(rotate, B, json={}).status_code == 404


def test_the_openapi_document_describes_the_deliveries_and_the_feed(env):
    _, api = env
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    hook = doc["webhooks"]["billing-event"]["post"]
    headers = {p["name"] for p in hook["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    body = hook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    event = doc["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert {"event_id", "type", "service_id", "occurred_at"} <= set(event["required"])
    feed = doc["paths"]["/v1/events"]["get"]
    page = feed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(doc["components"]["schemas"][page.rsplit("/", 1)[1]]["properties"]) == {
        "events", "next_cursor", "has_more"}
    assert {p["name"] for p in feed["parameters"]} == {"after", "limit", "wait"}
    assert {"post", "get"} <= set(doc["paths"]["/v1/webhooks"])
