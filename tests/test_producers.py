"""OrderClient and the CLI against a real RabbitMQ (``AMQP_URL``), one namespace per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from producers.api import OrderClient
from producers.events import EVENT_TYPES, InvalidEvent, parse_event
from pvekvm import messaging
from pvekvm.config import ROOT
from tests.test_events import EXAMPLES


@pytest.fixture()
def fresh_topology(amqp_url: str) -> Iterator[messaging.Topology]:
    """A namespace nobody has declared yet (OrderClient must declare it); deleted afterwards."""
    topo = messaging.Topology(f"t-{uuid.uuid4().hex[:8]}")
    yield topo
    messaging.delete_topology(amqp_url, topo)


Delivery = tuple[Any, pika.BasicProperties, bytes]


def drain(amqp_url: str, queue: str, expect: int, timeout: float = 5.0) -> list[Delivery]:
    """Consume (and ack) messages from ``queue`` until ``expect`` arrived or the deadline
    passed, then make sure nothing more is there (a consumer: the orders queue has a single
    active consumer, which basic.get cannot be)."""
    conn = messaging.connect(amqp_url)
    got: list[Delivery] = []
    try:
        ch = conn.channel()
        deadline = time.monotonic() + timeout
        for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None:
                got.append((method, props, body))
            elif len(got) >= expect or time.monotonic() > deadline:
                break
        ch.cancel()
    finally:
        conn.close()
    assert len(got) == expect, f"expected {expect} messages, got {len(got)}: " \
        f"{[b for _, _, b in got]!r}"
    return got


def test_create_lands_exactly_the_json(amqp_url: str,
                                       fresh_topology: messaging.Topology) -> None:
    with OrderClient(amqp_url, fresh_topology.namespace) as client:
        event = client.create(service_id=5546, client_id=17, product="vps-s",
                              email="client@example.com", hostname="web1.example.com",
                              template="debian-12", ipv6=True)
    assert event.occurred_at  # stamped by the client

    [(method, props, body)] = drain(amqp_url, fresh_topology.orders_queue, 1)
    assert body == event.to_json()
    assert parse_event(body) == event
    assert method.routing_key == "order.create"
    assert method.exchange == fresh_topology.orders_exchange
    assert props.delivery_mode == 2
    assert props.message_id == event.idempotency_key
    assert props.content_type == "application/json"


def test_same_order_twice_carries_the_same_key(amqp_url: str,
                                               topology: messaging.Topology) -> None:
    with OrderClient(amqp_url, topology.namespace) as client:
        first = client.create(service_id=9, client_id=1, product="vps-s", email="a@example.com")
        second = client.create(service_id=9, client_id=1, product="vps-s", email="a@example.com")
        other = client.create(service_id=9, client_id=1, product="vps-m", email="a@example.com")
    assert first.idempotency_key == second.idempotency_key != other.idempotency_key

    got = drain(amqp_url, topology.orders_queue, 3)
    ids = [props.message_id for _, props, _ in got]
    assert ids == [first.idempotency_key, first.idempotency_key, other.idempotency_key]
    assert [parse_event(b).idempotency_key for _, _, b in got] == ids


def test_repeatable_actions_get_a_fresh_key_per_call_unless_one_is_passed(
        amqp_url: str, topology: messaging.Topology) -> None:
    """suspend, unsuspend, suspend again: the second suspend is a new order, not a copy."""
    with OrderClient(amqp_url, topology.namespace) as client:
        keys = [client.suspend(service_id=9).idempotency_key,
                client.suspend(service_id=9).idempotency_key,
                client.power(service_id=9, action="start").idempotency_key,
                client.power(service_id=9, action="start").idempotency_key,
                client.snapshot_create(service_id=9, name="nightly").idempotency_key,
                client.snapshot_create(service_id=9, name="nightly").idempotency_key,
                client.backup_create(service_id=9).idempotency_key,
                client.reset_password(service_id=9).idempotency_key,
                client.reset_password(service_id=9).idempotency_key]
        retried = [client.suspend(service_id=9, idempotency_key="whmcs:77").idempotency_key
                   for _ in range(2)]
    assert len(set(keys)) == len(keys)
    assert retried == ["whmcs:77", "whmcs:77"]
    ids = [props.message_id for _, props, _ in drain(amqp_url, topology.orders_queue, 11)]
    assert ids == keys + retried


def test_cli_gives_repeatable_actions_a_fresh_key() -> None:
    runs = [cli("--dry-run", "suspend", "--service-id", "4") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (parse_event(r.stdout).idempotency_key for r in runs)
    assert first != second
    kept = cli("--dry-run", "suspend", "--service-id", "4", "--idempotency-key", "whmcs:5")
    assert parse_event(kept.stdout).idempotency_key == "whmcs:5"
    once = [cli("--dry-run", "terminate", "--service-id", "4") for _ in range(2)]
    assert len({parse_event(r.stdout).idempotency_key for r in once}) == 1  # not repeatable


def test_explicit_key_and_time_are_kept(amqp_url: str, topology: messaging.Topology) -> None:
    with OrderClient(amqp_url, topology.namespace) as client:
        event = client.power(service_id=3, action="stop", idempotency_key="whmcs:call-42",
                             occurred_at="2026-04-10T03:49:18+00:00")
    [(_, props, body)] = drain(amqp_url, topology.orders_queue, 1)
    assert props.message_id == "whmcs:call-42"
    assert json.loads(body)["occurred_at"] == "2026-04-10T03:49:18+00:00"
    assert parse_event(body) == event


def test_one_method_per_type_each_publishes_its_type(amqp_url: str,
                                                     topology: messaging.Topology) -> None:
    with OrderClient(amqp_url, topology.namespace) as client:
        sent = [getattr(client, event_type)(service_id=77, **fields)
                for event_type, fields in EXAMPLES.items()]
    got = drain(amqp_url, topology.orders_queue, len(EVENT_TYPES))
    assert [m.routing_key for m, _, _ in got] == [f"order.{t}" for t in EXAMPLES]
    assert [parse_event(b) for _, _, b in got] == sent


def test_invalid_order_raises_and_publishes_nothing(amqp_url: str,
                                                   topology: messaging.Topology) -> None:
    with OrderClient(amqp_url, topology.namespace) as client:
        with pytest.raises(InvalidEvent, match="field 'hostname'"):
            client.create(service_id=1, client_id=1, product="vps", email="a@b.example",
                          hostname="evil;rm -rf /")
        with pytest.raises(InvalidEvent, match="field 'service_id'"):
            client.suspend(service_id=True)
        with pytest.raises(InvalidEvent, match="field 'days'"):
            client.backup_schedule(service_id=1, days="mon")
    drain(amqp_url, topology.orders_queue, 0, timeout=0.2)


# --------------------------------------------------------------------------- CLI

def cli(*args: str, amqp_url: str | None = None, stdin: bytes | None = None,
        ) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "PVEKVM_NAMESPACE")}
    env["PVEKVM_CONFIG"] = os.devnull  # an empty settings file: only options and environment
    if amqp_url:
        env["AMQP_URL"] = amqp_url
    return subprocess.run([sys.executable, "-m", "producers", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, timeout=60, check=False)


def test_cli_dry_run_prints_json_and_publishes_nothing(amqp_url: str,
                                                       topology: messaging.Topology) -> None:
    out = cli("create", "--service-id", "5546", "--client-id", "17", "--product", "vps-s",
              "--email", "client@example.com", "--hostname", "web1.example.com", "--ipv6",
              "--namespace", topology.namespace, "--dry-run", amqp_url=amqp_url)
    assert out.returncode == 0, out.stderr
    event = parse_event(out.stdout.strip())
    assert event.type == "create" and event.service_id == 5546
    assert event.ipv6 is True and event.hostname == "web1.example.com"  # type: ignore[attr-defined]
    drain(amqp_url, topology.orders_queue, 0, timeout=0.2)


def test_cli_options_before_subcommand_and_empty_days() -> None:
    out = cli("--dry-run", "backup_schedule", "--service-id", "4", "--days")
    assert out.returncode == 0, out.stderr
    assert parse_event(out.stdout).days == ()  # type: ignore[attr-defined]


def test_cli_takes_several_keys_and_rules_as_json() -> None:
    """The list fields a client sends: ``--ssh-keys`` once per key, ``--rules`` as JSON."""
    key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVdBlmT5o+QjmG0kcx9yBGzkYqvqk4bKXX1uXK7qo3G "
           "a@b")
    two = cli("--dry-run", "create", "--service-id", "4", "--client-id", "1", "--product", "p",
              "--email", "a@b.example", "--ssh-keys", key, "--ssh-keys", key.replace("a@b", "c"))
    assert two.returncode == 2 and b"key 2: the same key as key 1" in two.stderr, two.stderr
    one = cli("--dry-run", "create", "--service-id", "4", "--client-id", "1", "--product", "p",
              "--email", "a@b.example", "--ssh-keys", key)
    assert one.returncode == 0, one.stderr
    assert parse_event(one.stdout).ssh_keys == (key,)  # type: ignore[attr-defined]
    rules = cli("--dry-run", "firewall_rules_set", "--service-id", "4", "--rules",
                '[{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22"}]')
    assert rules.returncode == 0, rules.stderr
    assert parse_event(rules.stdout).rules[0]["dport"] == "22"  # type: ignore[attr-defined]


def test_cli_publishes(amqp_url: str, fresh_topology: messaging.Topology) -> None:
    out = cli("backup_schedule", "--service-id", "12", "--days", "thu", "mon",
              "--amqp-url", amqp_url, "--namespace", fresh_topology.namespace)
    assert out.returncode == 0, out.stderr
    [(method, props, body)] = drain(amqp_url, fresh_topology.orders_queue, 1)
    event = parse_event(body)
    assert event.days == ("mon", "thu")  # type: ignore[attr-defined]
    assert method.routing_key == "order.backup_schedule"
    assert props.delivery_mode == 2 and props.message_id == event.idempotency_key
    assert f"message_id={event.idempotency_key}".encode() in out.stdout


def test_cli_namespace_and_url_from_environment(amqp_url: str,
                                                topology: messaging.Topology) -> None:
    env_out = subprocess.run(
        [sys.executable, "-m", "producers", "suspend", "--service-id", "8"], cwd=ROOT,
        env={**os.environ, "AMQP_URL": amqp_url, "PVEKVM_NAMESPACE": topology.namespace},
        capture_output=True, timeout=60, check=False)
    assert env_out.returncode == 0, env_out.stderr
    [(_, _, body)] = drain(amqp_url, topology.orders_queue, 1)
    assert parse_event(body).type == "suspend"


@pytest.mark.parametrize(("args", "field"), [
    (["create", "--service-id", "1", "--client-id", "1", "--product", "vps",
      "--email", "a@b.example", "--hostname", "evil;rm -rf /"], "hostname"),
    (["create", "--service-id", "0", "--client-id", "1", "--product", "vps",
      "--email", "a@b.example"], "service_id"),
    (["snapshot_create", "--service-id", "1", "--name", "1bad"], "name"),
    (["iso_mount", "--service-id", "1", "--iso", "../../etc/passwd.iso"], "iso"),
    (["backup_schedule", "--service-id", "1", "--days", "mon", "mon"], "days"),
])
def test_cli_invalid_input_exits_2_naming_the_field(
        amqp_url: str, topology: messaging.Topology, args: list[str], field: str) -> None:
    out = cli(*args, "--namespace", topology.namespace, amqp_url=amqp_url)
    assert out.returncode == 2
    assert f"field '{field}'".encode() in out.stderr
    assert out.stdout == b""
    drain(amqp_url, topology.orders_queue, 0, timeout=0.2)


def test_cli_argparse_errors_exit_2() -> None:
    assert cli("power", "--service-id", "1", "--action", "explode").returncode == 2
    assert cli("create", "--service-id", "1").returncode == 2  # required options missing
    assert cli("no_such_type").returncode == 2


def test_cli_raw_publishes_body_as_is(amqp_url: str, topology: messaging.Topology,
                                      tmp_path: Any) -> None:
    garbage = b"\x00 this is not an event {"
    out = cli("raw", "-", "--namespace", topology.namespace, amqp_url=amqp_url, stdin=garbage)
    assert out.returncode == 0, out.stderr
    replay = tmp_path / "replay.json"
    replay.write_bytes(b'{"type": "terminate", "idempotency_key": "whmcs:7", "junk": 1}')
    out = cli("raw", str(replay), "--namespace", topology.namespace, amqp_url=amqp_url)
    assert out.returncode == 0, out.stderr

    (m1, p1, b1), (m2, p2, b2) = drain(amqp_url, topology.orders_queue, 2)
    assert b1 == garbage and m1.routing_key == "order.raw" and p1.delivery_mode == 2
    assert p1.message_id.startswith("raw:")
    assert b2 == replay.read_bytes() and m2.routing_key == "order.terminate"
    assert p2.message_id == "whmcs:7"


def test_cli_raw_missing_file_exits_2(tmp_path: Any) -> None:
    out = cli("raw", str(tmp_path / "absent.json"), "--dry-run")
    assert out.returncode == 2
    assert b"cannot read" in out.stderr


def test_cli_broker_down_exits_1() -> None:
    out = cli("suspend", "--service-id", "1", "--amqp-url",
              "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&retry_delay=0")
    assert out.returncode == 1
    assert b"publish failed" in out.stderr


def test_cli_without_broker_url_exits_2() -> None:
    out = cli("suspend", "--service-id", "1")
    assert out.returncode == 2
    assert b"AMQP_URL" in out.stderr
