"""Every node's API from the engine's side (pvekvm/endpoints.py): a call that cannot reach an
endpoint goes to the next, a failing endpoint is skipped and probed again, a request that may
have reached PVE is never sent twice, and the calls in flight per node are bounded."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvekvm import endpoints
from pvekvm.config import ProxmoxSettings
from pvekvm.proxmox import Proxmox, ProxmoxError
from pvesim.certs import ensure_certs
from pvesim.testing import RunningSimulator, running_simulator
from workers.testing.harness import wait_until


@pytest.fixture()
def cluster(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, per_node_api=True) as s:
        yield s


def _client(connection: dict, urls: list[str] | None = None, **tuning: object) -> Proxmox:
    conn = {**connection, "endpoints": urls or connection["endpoints"]}
    return Proxmox(ProxmoxSettings.from_connection(conn, **tuning), timeout=5)


@pytest.fixture()
def silent(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """An endpoint that reads a request whole and closes without an answer (it may have been
    carried out): its URL and the request lines it read."""
    ca, cert, key = ensure_certs(tmp_path / "pvesim", ["127.0.0.1"])  # the cluster's CA
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as r:
                    seen.append(r.readline().strip())
                    while r.readline() not in (b"\r\n", b""):
                        pass
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/api2/json", seen
    stop.set()
    t.join(5)
    listener.close()


def test_a_call_goes_to_the_next_endpoint_while_the_first_is_down_and_back_after_a_probe(
        cluster):
    cluster.set_api("pve1", False)
    pve = _client(cluster.connection, endpoint_retry_s=0.3)
    upid = pve.post("nodes/pve1/qemu/9000/clone", newid=701, name="failover", full=1)
    cluster.wait_task(upid)
    assert cluster.vm(701)["config"]["name"] == "failover"
    state = pve.endpoints
    assert state.failing() == [cluster.connection["endpoints"][0]] and state.failures[0] == 1
    for _ in range(5):  # skipped while marked: no new failure, no connection attempt
        pve.get("nodes/pve1/qemu/701/status/current")
    assert state.failures[0] == 1
    cluster.set_api("pve1", True)
    wait_until(lambda: pve.get("version") and not state.failing(), 5,
               "the first endpoint probed again and in use", db=False)
    assert state.failures[0] == 1


def test_a_post_that_may_have_reached_pve_is_not_sent_to_the_next_endpoint(cluster, silent,
                                                                          tmp_path):
    url, seen = silent
    pve = _client(cluster.connection, [url, *cluster.connection["endpoints"]])
    with pytest.raises(ProxmoxError) as post:
        pve.post("nodes/pve1/qemu/9000/clone", newid=702, name="once", full=1)
    assert not post.value.not_sent and post.value.transient
    assert len(seen) == 1 and seen[0].startswith(b"POST ")
    assert cluster.vm(702) is None  # nothing sent on to pvesim: the step decides
    # a read is safe to repeat: it goes on to the next endpoint (the silent one is marked)
    assert pve.get("version")["version"]
    assert pve.endpoints.failing() == [url]
    # a TLS failure (a certificate of another CA) is before anything was sent: even a POST
    # goes on to the next endpoint
    other_ca, _, _ = ensure_certs(tmp_path / "other", ["127.0.0.1"])
    strange = Proxmox(ProxmoxSettings.from_connection(
        {**cluster.connection, "ca_bundle": str(other_ca), "endpoints": [url, url + "/"]}))
    with pytest.raises(ProxmoxError) as tls:
        strange.post("nodes/pve1/qemu/9000/clone", newid=705, full=1)
    assert tls.value.not_sent and len(seen) == 1  # both refused in the handshake


def test_a_595_goes_to_the_next_endpoint_a_596_post_does_not(cluster, monkeypatch):
    received: list[tuple[str, str | None]] = []
    api = cluster.sim.api

    def counting(method, path, params, headers, entry=None):
        received.append((method, entry))
        return api(method, path, params, headers, entry)

    monkeypatch.setattr(cluster.sim, "api", counting)
    pve = _client(cluster.connection)
    # 595: pveproxy could not connect where it proxies (nothing sent): every endpoint is tried
    cluster.set_faults(error_rate=1.0, error_status=595, error_message="Connection refused")
    with pytest.raises(ProxmoxError) as refused:
        pve.post("nodes/pve1/qemu/9000/clone", newid=703, full=1)
    assert refused.value.status == 595 and refused.value.not_sent is False
    assert [e for _, e in received[:3]] == ["pve1", "pve2", "pve3"]
    assert pve.endpoints.failing() == []  # an endpoint that answered is not failing
    # 596: the request phase (the proxy timeout): a POST may have been carried out
    received.clear()
    cluster.set_faults(error_rate=1.0, error_status=596, error_message="Connection timed out")
    with pytest.raises(ProxmoxError) as timed_out:
        pve.post("nodes/pve1/qemu/9000/clone", newid=704, full=1)
    assert timed_out.value.status == 596 and received == [("POST", "pve1")]
    received.clear()
    with pytest.raises(ProxmoxError):
        pve.get("version")  # a read goes on to the next endpoint (and is retried inline)
    assert [e for _, e in received[:3]] == ["pve1", "pve2", "pve3"]
    cluster.set_faults()


def test_the_calls_in_flight_per_node_are_bounded_per_process(cluster):
    cluster.set_limits(api_time_ms=60, daemon_workers=0, proxy_workers=0)
    conn = {**cluster.connection, "endpoints": cluster.connection["endpoints"]}
    settings = ProxmoxSettings.from_connection(conn, max_calls_per_node=2)
    errors: list[Exception] = []

    def calls() -> None:
        pve = Proxmox(settings, timeout=10)  # one client per thread, as workers have
        try:
            for _ in range(3):
                pve.get("nodes/pve1/qemu/9000/status/current")
        except ProxmoxError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=calls) for _ in range(6)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and cluster.limit_stats()["most_in_flight"] <= 2
    assert time.monotonic() - start >= 6 * 3 / 2 * 0.06 * 0.9  # they queued here, 2 at a time
    assert endpoints.endpoints(settings.urls, settings.endpoint_retry_s, 2).failing() == []


def test_check_names_each_endpoint_and_the_one_that_does_not_answer(cluster):
    from pvekvm.config import Settings
    from pvekvm.preflight import check_proxmox

    cluster.set_api("pve2", False)
    pve = ProxmoxSettings.from_connection(cluster.connection)
    lines = check_proxmox(Settings(database_url="mysql://x", amqp_url="amqp://x", proxmox=pve),
                          nodes=False, privileges=False)
    by_name = {v.name: v for v in lines}
    first, second, third = cluster.connection["endpoints"]
    assert by_name["Proxmox"].status == "ok"
    assert by_name[f"Proxmox endpoint {first}"].status == "ok"
    assert by_name[f"Proxmox endpoint {third}"].status == "ok"
    down = by_name[f"Proxmox endpoint {second}"]
    assert down.status == "FAIL" and "calls go to the other endpoints" in down.detail
    # a worker starts while an endpoint is down: one that answers is enough
    from pvekvm.preflight import CHECKS

    cluster.set_api("pve1", False)
    startup = CHECKS["proxmox"](Settings(database_url="mysql://x", amqp_url="amqp://x",
                                         proxmox=pve))
    assert [v.status for v in startup] == ["ok"]
