"""The whole engine on real services for end-to-end tests: MariaDB, RabbitMQ (a private
namespace), pvesim, an SMTP sink, and workers (in-process threads or real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

import pika
from peewee import InterfaceError, OperationalError

from pvekvm import catalog, secrets
from pvekvm.config import (
    ROOT,
    EngineSettings,
    PlacementSettings,
    ProxmoxSettings,
    RdnsSettings,
    Settings,
    SmtpSettings,
)
from pvekvm.models import Operation, Service, database
from workers.consumer import WorkerProcess, all_pools

FAST_ENGINE = EngineSettings(poll_delays_s=(0.25, 0.25, 0.5, 1.0), stale_after_s=6.0,
                             max_attempts=10)


#: FCrDNS asks the suite's PowerDNS (scripts/pdns.sh), never the machine's resolver
TEST_RDNS = RdnsSettings(resolver=f"127.0.0.1:{os.environ.get('PDNS_DNS_PORT', '5354')}",
                         timeout_s=2.0)


def make_settings(tmp_path: Path, amqp_url: str, database_url: str, namespace: str,
                  connection: dict, smtp: SmtpSettings,
                  engine: EngineSettings = FAST_ENGINE) -> Settings:
    secrets.create_key(str(tmp_path / "secret.key"))  # as init-db does on a new database
    return Settings(database_url=database_url, amqp_url=amqp_url, namespace=namespace,
                    proxmox=ProxmoxSettings.from_connection(connection), smtp=smtp,
                    engine=engine, secret_key_file=str(tmp_path / "secret.key"),
                    rdns=TEST_RDNS)


def load_catalog(settings: Settings, **product_overrides: object) -> None:
    from pvekvm.catalog_cache import _catalog

    _catalog.clear()  # row ids restart with each test's fresh database: no stale packages
    catalog.load_file(ROOT / "config" / "catalog.toml", settings.secret_key_file)
    if product_overrides:
        from pvekvm.models import Product

        Product.update(**product_overrides).execute()


def _proxmox_keys(pve: ProxmoxSettings) -> str:
    return ((f'endpoints = {list(pve.endpoints)}\n' if pve.endpoints else
             f'base_url = "{pve.base_url}"\n') +
            f'token_id = "{pve.token_id}"\ntoken_secret = "{pve.token_secret}"\n'
            f'ca_bundle = "{pve.ca_bundle}"\nmax_calls_per_node = {pve.max_calls_per_node}\n'
            f'endpoint_retry_s = {pve.endpoint_retry_s}\n')


def _keys(ps: PlacementSettings) -> list[tuple[str, str]]:
    """Every key of ``ps`` and its TOML value."""
    return [(f.name, repr(getattr(ps, f.name))) for f in fields(ps)]


def _inline(ps: PlacementSettings) -> str:
    """``ps`` as a TOML inline table (every key)."""
    return "{ " + ", ".join(f"{k} = {v}" for k, v in _keys(ps)) + " }"


def write_config(settings: Settings, path: Path) -> Path:
    """A TOML file (plus env) that makes a subprocess worker use the same settings (several
    clusters: one ``[[clusters]]`` table each)."""
    e = settings.engine
    assert settings.proxmox is not None
    if len(settings.all_clusters) > 1:
        where = "".join(f'[[clusters]]\nname = "{c.name}"\n' + _proxmox_keys(c.proxmox)
                        + "".join(f"{k} = {getattr(c, k)}\n" for k in ("vmid_min", "vmid_max")
                                  if getattr(c, k) is not None)
                        + (f"placement = {_inline(c.placement)}\n" if c.placement else "")
                        for c in settings.all_clusters)
    else:
        where = "[proxmox]\n" + _proxmox_keys(settings.proxmox)
    where += "[placement]\n" + "".join(f"{k} = {v}\n" for k, v in _keys(settings.placement))
    path.write_text(
        f'[database]\nurl = "{settings.database_url}"\n'
        f'[amqp]\nurl = "{settings.amqp_url}"\nnamespace = "{settings.namespace}"\n'
        + where +
        f'[smtp]\nhost = "{settings.smtp.host}"\nport = {settings.smtp.port}\n'
        f'[engine]\npoll_delays_s = {list(e.poll_delays_s)}\nstale_after_s = {e.stale_after_s}\n'
        f'max_attempts = {e.max_attempts}\ndeploy_window = {e.deploy_window}\n'
        f'clones_per_storage = {e.clones_per_storage}\n'
        f'[secrets]\nkey_file = "{settings.secret_key_file}"\n'
        f'[rdns]\nresolver = "{settings.rdns.resolver}"\ntimeout_s = {settings.rdns.timeout_s}\n')
    return path


class InProcessWorkers:
    def __init__(self, settings: Settings, concurrency: int = 4,
                 pools: list[str] | None = None) -> None:
        self.proc = WorkerProcess(settings, pools or all_pools(), concurrency)

    def __enter__(self) -> InProcessWorkers:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.shutdown()


class SubprocessWorker:
    """``python -m workers`` as a real process (so it can be SIGKILLed)."""

    def __init__(self, config: Path, concurrency: int = 4, log: Path | None = None) -> None:
        self.config, self.concurrency, self.log = config, concurrency, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> SubprocessWorker:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE")}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(self.config),
             "--concurrency", str(self.concurrency), "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class BillingQueue:
    """A queue billing would bind to ``{ns}.events`` (every type), read back as parsed events."""

    def __init__(self, settings: Settings, pattern: str = "#") -> None:
        from pvekvm import messaging

        self.conn = messaging.connect(settings.amqp_url)
        self.ch = self.conn.channel()
        topo = messaging.Topology(settings.namespace)
        self.ch.exchange_declare(topo.events_exchange, "topic", durable=True)
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, topo.events_exchange, routing_key=pattern)
        self.received: list[dict] = []
        self.raw: list[bytes] = []

    def drain(self) -> list[dict]:
        import json

        while True:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.received
            self.raw.append(body)
            event = json.loads(body)
            assert props.message_id == event["event_id"] and method.routing_key == event["type"]
            self.received.append(event)

    def wait_for(self, match: Callable[[dict], bool], timeout: float, what: str) -> dict:
        def found() -> dict | None:
            self.drain()
            return next((e for e in self.received if match(e)), None)
        return wait_until(found, timeout, what, db=False)

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


def dead_queue(settings: Settings) -> list[tuple[dict, bytes]]:
    """(headers, body) of every message parked in the namespace's dead queue, taken off it."""
    from pvekvm import messaging

    conn = messaging.connect(settings.amqp_url)
    out: list[tuple[dict, bytes]] = []
    try:
        ch = conn.channel()
        queue = messaging.Topology(settings.namespace).dead_queue
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((props.headers or {}, body))
    finally:
        conn.close()


T = TypeVar("T")


def wait_until(cond: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.1, db: bool = True) -> T:
    """Poll ``cond`` until it returns something truthy and return that, or fail after
    ``timeout`` seconds. A database that does not answer (a restart under test) counts as 'not
    yet'."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if db:
                database.connect(reuse_if_open=True)
            value = cond()
        except (OperationalError, InterfaceError):
            database.close()
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def statuses(service_ids: Iterable[int]) -> dict[int, str]:
    ids = list(service_ids)
    return {s.id: s.status for s in Service.select().where(Service.id.in_(ids))}


def all_ready(service_ids: Iterable[int]) -> Callable[[], bool]:
    ids = list(service_ids)

    def check() -> bool:
        st = statuses(ids)
        return len(st) == len(ids) and all(v == "ready" for v in st.values())

    return check


def describe_ops(service_ids: Iterable[int]) -> str:
    ops = Operation.select().where(Operation.service_id.in_(list(service_ids)))
    return "; ".join(f"{o.service_id}:{o.state}/{o.status}/{o.error or ''}" for o in ops)


__all__ = ["FAST_ENGINE", "BillingQueue", "InProcessWorkers", "SubprocessWorker", "all_ready",
           "dead_queue", "describe_ops", "load_catalog", "make_settings",
           "replace", "statuses", "wait_until",
           "write_config"]


def queue_exists(conn: pika.BlockingConnection, queue: str) -> bool:
    """Whether the broker has ``queue`` now (a passive declare on a channel of its own)."""
    from pika.exceptions import ChannelClosedByBroker

    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except ChannelClosedByBroker:
        return False
