"""Every node's API: one cluster's endpoints, tried in order, and a bound on the calls this
process has in flight per node.

Any node of a PVE cluster serves the whole cluster's API: pveproxy runs a call for another node
by proxying it there (pve-manager ``PVE/HTTPServer.pm`` rest_handler, ``proxyto``), and hands a
call that needs root to the local pvedaemon (``protected``). So a call may go to any endpoint.

Invariants:
- a call goes to the first endpoint not marked failing; one that cannot be reached (connection
  refused, TLS failure, a timeout before a byte was sent) is marked failing for
  ``endpoint_retry_s`` and the call goes to the next at once. When that time has passed, one
  call (the first to come) probes it; an answer clears the mark. Failing endpoints are still
  tried, last, when every other one failed too;
- a request that may have reached PVE is never sent again here: after a failure once written
  (no answer, a timeout waiting for it) only a GET goes on to the next endpoint; a POST, PUT
  or DELETE raises (``not_sent`` False) and the idempotent step looks at Proxmox before trying
  again;
- an answer 595 (pveproxy could not connect where it proxies: AnyEvent::HTTP's "connecting"
  phase, nothing was sent) goes on to the next endpoint for any method (another pveproxy or
  pvedaemon may reach it); 596 (the request phase: it may have been carried out, e.g. the 30 s
  proxy timeout) only for a GET; the endpoint that answered is not marked failing;
- at most ``max_calls_per_node`` calls of this process are in flight per node's API: a call
  whose path names a node (``nodes/NODE/...``: PVE proxies it to that node's pveproxy and
  pvedaemon, whichever endpoint receives it) counts against that node, any other against the
  endpoint it is sent to (so do a VM's firewall calls: they have no ``proxyto`` in PVE's API
  schema, the firewall files being on the cluster file system). A thread waits for a free
  slot (the burst stays in RabbitMQ, as the waiting threads take no new messages) at most the
  call timeout, then the call fails unsent.
The state is per process (shared by its threads): N worker processes put up to N times the
bound on a node.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pvekvm.pvehttp import PveSession, Response, TransportError

API_NODES = "/api2/json/nodes/"


class Endpoints:
    """The health of one cluster's endpoints and its call slots, shared by a process."""

    def __init__(self, urls: tuple[str, ...], retry_s: float, max_calls: int) -> None:
        self.urls, self.retry_s, self.max_calls = urls, retry_s, max_calls
        self.failing_until = [0.0] * len(urls)  # monotonic time to probe again; 0 = healthy
        self.failures = [0] * len(urls)  # times each was marked failing (status, tests)
        self._any_failing = False
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._in_order = list(range(len(urls)))

    def order(self) -> list[int]:
        """Indexes to try: healthy ones in the configured order, an endpoint whose skip time has
        passed (given to this caller only: the others skip it while it is probed), then those
        still failing."""
        if not self._any_failing:
            return self._in_order
        now = time.monotonic()
        healthy, probe, failing = [], [], []
        with self._lock:
            for i, until in enumerate(self.failing_until):
                if not until:
                    healthy.append(i)
                elif until <= now:
                    self.failing_until[i] = now + self.retry_s  # one probe at a time
                    probe.append(i)
                else:
                    failing.append(i)
        return probe + healthy + failing if probe else healthy + failing

    def failed(self, i: int) -> None:
        with self._lock:
            self.failing_until[i] = time.monotonic() + self.retry_s
            self.failures[i] += 1
            self._any_failing = True

    def answered(self, i: int) -> None:
        if self.failing_until[i]:
            with self._lock:
                self.failing_until[i] = 0.0
                self._any_failing = any(self.failing_until)

    def failing(self) -> list[str]:
        """The endpoints marked failing now."""
        return [u for u, until in zip(self.urls, self.failing_until, strict=True) if until]

    def slot(self, key: str) -> threading.BoundedSemaphore | None:
        """The call slots of ``key`` (a node, or an endpoint), None without a bound."""
        if not self.max_calls:
            return None
        sem = self._slots.get(key)
        if sem is None:
            with self._lock:
                sem = self._slots.setdefault(key, threading.BoundedSemaphore(self.max_calls))
        return sem


_registry: dict[tuple[tuple[str, ...], float, int], Endpoints] = {}
_registry_lock = threading.Lock()


def endpoints(urls: tuple[str, ...], retry_s: float, max_calls: int) -> Endpoints:
    """This process's state for that list of endpoints (one per cluster)."""
    key = (urls, retry_s, max_calls)
    found = _registry.get(key)
    if found is None:
        with _registry_lock:
            found = _registry.setdefault(key, Endpoints(urls, retry_s, max_calls))
    return found


def host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        return host + "]", int(rest[1:]) if rest.startswith(":") else 8006
    host, _, port = hostport.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (hostport, 8006)


class FailoverSession:
    """A ``session`` for proxmoxer (one per thread) over every endpoint of a cluster."""

    def __init__(self, state: Endpoints, authorization: str, verify: str | bool,
                 timeout: float) -> None:
        self.state, self.timeout = state, timeout
        self.sessions = [PveSession(*host_port(u), authorization, verify, timeout)
                         for u in state.urls]

    def request(self, method: str, url: str, data: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None, **_: Any) -> Response:
        state = self.state
        at = url.find(API_NODES)
        node = None
        if at >= 0 and "/firewall" not in url:
            node = url[at + len(API_NODES):].split("/", 1)[0]
        safe = method == "GET"
        order = state.order()
        last: Response | TransportError | None = None
        for n, i in enumerate(order):
            sem = state.slot(node or state.urls[i])
            if sem is not None and not sem.acquire(timeout=self.timeout):
                raise TransportError(f"{method} {url}: no free call slot for "
                                     f"{node or state.urls[i]} within {self.timeout:g} s "
                                     "([proxmox] max_calls_per_node)", not_sent=True)
            try:
                resp = self.sessions[i].request(method, url, data=data, params=params)
            except TransportError as exc:
                state.failed(i)
                if not (exc.not_sent or safe) or n == len(order) - 1:
                    raise
                last = exc
                continue
            finally:
                if sem is not None:
                    sem.release()
            state.answered(i)
            if resp.status_code == 595 or (resp.status_code == 596 and safe):
                last = resp
                continue
            return resp
        if isinstance(last, TransportError):
            raise last
        assert last is not None
        return last

    def close(self) -> None:
        for s in self.sessions:
            s.close()
