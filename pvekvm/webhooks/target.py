"""Where a webhook may go, and one bounded POST.

Allow rule (an attacker who holds a billing token must not make the engine call its own
network, e.g. ``http://169.254.169.254/`` or ``http://127.0.0.1:15672/``):

- endpoints in the settings file (``[[webhooks]]``) are the operator's: trusted, any address;
- endpoints registered over the API reach public (globally routable) addresses only, unless
  the address is inside ``[webhook_delivery] api_allowed_networks``. Checked at registration
  for an address literal and ``localhost``, and at every attempt on the addresses the name
  resolves to then: the connection goes to an address that passed, so a name that resolves
  differently later (DNS rebinding) reaches nothing else.

One attempt is bounded: the whole exchange (resolve, connect, TLS, request, the status line
and headers) must end within ``timeout_s`` (a watchdog closes the socket of a receiver that
trickles bytes); the response body is never read; redirects are not followed.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: ``status`` (None: no HTTP answer) and, unless 2xx, why."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _plain(ip: Address) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_allowed(ip: Address, allowed: Iterable[Network]) -> bool:
    """Public (globally routable, not multicast), or inside one of ``allowed``."""
    ip = _plain(ip)
    if any(ip in n for n in allowed if n.version == ip.version):
        return True
    return ip.is_global and not ip.is_multicast


def registration_problem(url: str, allowed: Iterable[Network]) -> str | None:
    """Why an API-registered ``url`` is refused before any lookup: a host that is an address
    outside the allow rule, or a loopback name. (Names are checked again when resolved.)"""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "url: localhost is refused for endpoints registered over the API"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        last = host.rsplit(".", 1)[-1]
        if ":" in host or "%" in host or last.isdigit() or last.startswith("0x") \
                or host.startswith("0x"):
            # 2130706433, 0x7f.1, fe80::1%eth0: forms a resolver turns into an address
            return "url: a host must be a name or a plain IPv4 / IPv6 address"
        return None
    if not address_allowed(ip, list(allowed)):
        return (f"url: {ip} is not a public address (the API refuses private, loopback and "
                "link-local targets; [webhook_delivery] api_allowed_networks admits some)")
    return None


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to one chosen address (the Host header keeps the name)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(_Pinned):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


#: name lookups run here so one that hangs (a resolver that does not answer) is given up at
#: the attempt's deadline; the lookup itself ends with the resolver's own timeout
_resolvers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-resolve")


def resolve(host: str, port: int, timeout_s: float = 10.0) -> list[Address]:
    """The addresses ``host`` resolves to now; TimeoutError past ``timeout_s``."""
    infos = _resolvers.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM
                              ).result(timeout=timeout_s)
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float,
         allowed: Callable[[Address], bool] | None = None) -> Attempt:
    """POST ``body`` to ``url``; ``allowed`` (None: anything) says which resolved addresses
    may be connected to. Never raises for what the receiver or the network does."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout_s
    try:
        addresses = resolve(host, port, timeout_s)
    except FutureTimeout:
        return Attempt(None, f"cannot resolve {host} within {timeout_s:g} s")
    except (OSError, ValueError) as exc:
        return Attempt(None, f"cannot resolve {host}: {exc}"[:300])
    usable = [a for a in addresses if allowed is None or allowed(a)]
    if not usable:
        return Attempt(None, f"{host} resolves to no address this endpoint may reach "
                       f"({', '.join(map(str, addresses[:4]))}: not public)")
    cls = _PinnedTLS if https else _Pinned
    conn = cls(host, port, str(usable[0]), max(0.1, deadline - time.monotonic()))
    expired = threading.Event()

    def cut() -> None:  # a receiver that trickles its answer: close under it
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers={**headers,
                                                       "content-length": str(len(body))})
        response = conn.getresponse()  # status line and headers only: the body is not read
        status = response.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set():
            return Attempt(None, f"no answer within {timeout_s:g} s")
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        return Attempt(None, f"no answer within {timeout_s:g} s")
    if 200 <= status < 300:
        return Attempt(status, None)
    if 300 <= status < 400:
        return Attempt(status, f"HTTP {status}: redirects are not followed")
    return Attempt(status, f"HTTP {status}")
