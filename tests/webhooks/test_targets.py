"""One attempt is bounded whatever the receiver does, and an endpoint registered over the API
cannot reach the engine's own network (tests/webhooks/test_api_webhooks.py: registration)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pvekvm.webhooks import target


@contextlib.contextmanager
def raw_server(serve: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[int]]]:
    """A TCP server on loopback running ``serve(conn)`` per connection; yields its URL and
    the count of connections it got."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    got: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            got.append(1)
            threading.Thread(target=lambda c=conn: _run(serve, c), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook", got
    finally:
        stop.set()
        t.join(2)
        sock.close()


def _run(serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        serve(conn)


def _hang(conn: socket.socket) -> None:
    conn.recv(65536)
    time.sleep(5)


def _trickle(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(50):  # a header byte every 0.1 s: no read ever times out on its own
        conn.sendall(b"X")
        time.sleep(0.1)


def _huge(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(16000):  # 1 GB, if anyone read it
        conn.sendall(chunk)


@pytest.mark.parametrize("serve", [_hang, _trickle], ids=["hanging", "trickling"])
def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt_at_the_timeout(serve):
    with raw_server(serve) as (url, _):
        started = time.monotonic()
        attempt = target.post(url, b"{}", {}, timeout_s=0.5)
        took = time.monotonic() - started
    assert not attempt.ok and attempt.error == "no answer within 0.5 s"
    assert took < 1.5


def test_a_huge_response_is_not_read():
    with raw_server(_huge) as (url, _):
        started = time.monotonic()
        attempt = target.post(url, b"{}", {}, timeout_s=5)
        took = time.monotonic() - started
    assert attempt.ok and attempt.status == 200
    assert took < 1.0


def test_a_redirect_is_a_failure_not_followed():
    def redirect(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/"
                     b"\r\ncontent-length: 0\r\n\r\n")

    with raw_server(redirect) as (url, got):
        attempt = target.post(url, b"{}", {}, timeout_s=2)
    assert not attempt.ok and "redirects are not followed" in (attempt.error or "")
    assert len(got) == 1


def test_an_api_endpoint_never_connects_to_an_address_outside_the_allow_rule():
    with raw_server(_hang) as (url, got):
        attempt = target.post(url, b"{}", {}, timeout_s=1,
                              allowed=lambda ip: target.address_allowed(ip, []))
        assert not attempt.ok and "not public" in (attempt.error or "")
        allowed = [ipaddress.ip_network("127.0.0.0/8")]
        assert target.address_allowed(ipaddress.ip_address("127.0.0.1"), allowed)
    assert got == []  # not even a connection


@pytest.mark.parametrize("address", [
    "127.0.0.1", "169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "224.0.0.1", "255.255.255.255", "192.0.2.1"])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    assert not target.address_allowed(ipaddress.ip_address(address), [])


def test_public_addresses_are_allowed():
    for address in ("8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert target.address_allowed(ipaddress.ip_address(address), [])


def test_a_name_that_does_not_resolve_fails_the_attempt_with_the_reason():
    attempt = target.post("http://no-such-host.invalid/hook", b"{}", {}, timeout_s=2)
    assert not attempt.ok and "cannot resolve no-such-host.invalid" in (attempt.error or "")
