"""The transport under proxmoxer: one kept-alive connection, replaced before sending when the
server has closed it (a POST is never sent twice), and failures sorted by whether the request
can have reached Proxmox."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pvekvm.config import ProxmoxSettings
from pvekvm.proxmox import Proxmox, ProxmoxError
from pvekvm.pvehttp import PveSession, TransportError
from pvesim.certs import ensure_certs

ANSWER = b'{"data":"UPID:pve1:0001:0002:0003:qmclone:100:root@pam:"}'


@dataclass
class Server:
    """A TLS server answering ``requests_per_connection`` requests on each connection with a
    kept-alive 200, then closing it without saying so (as an idle timeout does)."""

    port: int
    ca: Path
    requests_per_connection: int = 1
    seen: list[tuple[int, bytes]] = field(default_factory=list)  # (connection no., request line)
    connections: int = 0
    closed: int = 0  # connections the server has closed


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    ca, cert, key = ensure_certs(tmp_path, ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    srv = Server(listener.getsockname()[1], ca)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            srv.connections += 1
            with ctx.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as reader:
                for _ in range(srv.requests_per_connection):
                    line = reader.readline()
                    if not line:  # the client closed it
                        break
                    length = 0
                    while (header := reader.readline()) not in (b"\r\n", b""):
                        if header.lower().startswith(b"content-length:"):
                            length = int(header.split(b":")[1])
                    reader.read(length)
                    srv.seen.append((srv.connections, line.strip()))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
            srv.closed += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv
    stop.set()
    thread.join(5)
    listener.close()


def _session(srv: Server) -> PveSession:
    return PveSession("127.0.0.1", srv.port, "PVEAPIToken=root@pam!t=s", str(srv.ca), 5.0)


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # poll interval


def test_a_connection_the_server_closed_while_idle_is_replaced_before_the_post(server):
    session = _session(server)
    first = session.request("POST", f"https://127.0.0.1:{server.port}/api2/json/nodes/pve1/"
                            "qemu/9000/clone", data={"newid": 101, "full": 1})
    assert first.status_code == 200 and first.content == ANSWER
    # the server closes the kept-alive connection after its one answer; the client learns it
    # only from the socket, before it sends the next POST
    _wait_for(lambda: server.closed == 1)
    second = session.request("POST", f"https://127.0.0.1:{server.port}/api2/json/nodes/pve1/"
                             "qemu/9000/clone", data={"newid": 102, "full": 1})
    assert second.status_code == 200
    assert [conn for conn, _ in server.seen] == [1, 2]  # each POST sent once, on its own
    assert all(line.startswith(b"POST /api2/json/nodes/pve1/qemu/9000/clone")
               for _, line in server.seen)


def test_a_kept_alive_connection_carries_the_calls_while_the_server_keeps_it(server):
    server.requests_per_connection = 50
    session = _session(server)
    for vmid in range(100, 110):
        answer = session.request("GET", f"https://127.0.0.1:{server.port}/api2/json/nodes/pve1/"
                                 f"qemu/{vmid}/config", params={"current": 1})
        assert answer.status_code == 200
    assert server.connections == 1
    assert server.seen[-1][1] == b"GET /api2/json/nodes/pve1/qemu/109/config?current=1 HTTP/1.1"


def test_a_refused_connection_is_not_sent_and_an_unanswered_request_may_have_been(server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = PveSession("127.0.0.1", port, "PVEAPIToken=root@pam!t=s", str(server.ca), 2.0)
    with pytest.raises(TransportError) as exc:
        refused.request("POST", f"https://127.0.0.1:{port}/api2/json/x", data={"a": 1})
    assert exc.value.not_sent
    # a server that takes the request and closes without an answer: it may have been done
    silent = socket.create_server(("127.0.0.1", 0))
    ca, cert, key = ensure_certs(server.ca.parent, ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def swallow() -> None:
        raw, _ = silent.accept()
        with ctx.wrap_socket(raw, server_side=True) as conn:
            conn.recv(65536)

    threading.Thread(target=swallow, daemon=True).start()
    port = silent.getsockname()[1]
    mute = PveSession("127.0.0.1", port, "PVEAPIToken=root@pam!t=s", str(ca), 2.0)
    with pytest.raises(TransportError) as exc:
        mute.request("POST", f"https://127.0.0.1:{port}/api2/json/x", data={"a": 1})
    assert not exc.value.not_sent
    silent.close()


def test_proxmox_answers_and_errors_come_through_proxmoxer_unchanged(sim):
    pve = Proxmox(ProxmoxSettings.from_connection(sim.connection))
    config = pve.vm_config("pve1", 9000)
    assert config["template"] == 1
    with pytest.raises(ProxmoxError) as missing:
        pve.vm_config("pve1", 4242)
    assert missing.value.status == 500 and not missing.value.transient
    assert "does not exist" in str(missing.value)
    with pytest.raises(ProxmoxError) as bad:  # a parameter PVE's schema refuses
        pve.post("nodes/pve1/qemu/9000/clone", newid="not-a-number")
    assert bad.value.status == 400 and not bad.value.transient
