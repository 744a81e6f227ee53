"""What a node's API can do at once, modelled after the real daemons (on by default; the
handler time ``api_time_ms`` is 0 unless set, so the limits only bite when it is).

Sources (read in pve-manager, pve-http-server, pve-guest-common, pve-common):
- pveproxy and pvedaemon each run ``max_workers => 3`` processes (``PVE/Service/pveproxy.pm``,
  ``pvedaemon.pm``; MAX_WORKERS in /etc/default/pveproxy changes it). Each worker is one
  AnyEvent loop that accepts up to ``max_conn => 500`` connections and runs an API handler
  synchronously: while a handler runs, the worker's other requests wait (there is no queue
  limit short of max_conn and no answer "busy": a request beyond the workers waits).
- ``PVE/HTTPServer.pm`` rest_handler: a method with ``proxyto => 'node'`` for another node is
  proxied to that node's pveproxy; a ``protected`` method (needs root) is handed to the local
  pvedaemon (``localhost:85``); anything else runs in the pveproxy worker itself.
- ``PVE/APIServer/AnyEvent.pm`` proxy_request: a proxied request has ``timeout => 30``; past it
  AnyEvent::HTTP answers 596 "Connection timed out" (595 when it could not connect). The request
  has reached pvedaemon by then and still runs when a worker frees: here too (a late run).
- ``PVE/AbstractConfig.pm`` lock_config = lock_config_full($vmid, 10, ...) and
  ``PVE/Tools.pm`` lock_file_full: flock of /var/lock/qemu-server/lock-VMID.conf, waited for at
  most 10 s inside the worker, then ``can't lock file '...' - got timeout`` (HTTP 500). Here
  every protected change of one VM (POST/PUT/DELETE under ``/nodes/N/qemu/VMID``, the clone's
  source excepted) holds that lock for its handler time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from .model import PVEError
from .qemu import lock_timeout_msg


@dataclass
class Limits:
    """proxy_workers/daemon_workers: pveproxy/pvedaemon worker processes per node (0: no
    limit); proxy_timeout_s: the proxied request's timeout; lock_wait_s: the VM config lock's
    wait; api_time_ms: how long a handler runs (its synchronous part) in its worker."""

    proxy_workers: int = 3
    daemon_workers: int = 3
    proxy_timeout_s: float = 30.0
    lock_wait_s: float = 10.0
    api_time_ms: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Limits:
        data = data or {}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        out = cls(**data)
        for f in fields(cls):
            v = getattr(out, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"{f.name}: expected a number >= 0, got {v!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProxyTimeout(Exception):
    """The proxied request got no answer within proxy_timeout_s (answered 596)."""


class NodeApis:
    """The worker pools of every node and the VM config locks, shared by all listeners."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._pools: dict[tuple[str, str, int], threading.Semaphore] = {}
        self._vm_locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        # most_waiting: requests waiting for one pool's worker at once; most_in_flight: requests
        # one node served (waiting or running) at once
        self.stats = {"proxy_timeouts": 0, "lock_timeouts": 0, "late_runs": 0,
                      "most_waiting": 0, "most_in_flight": 0}
        self._waiting: dict[str, int] = {}

    def _pool(self, node: str, daemon: bool) -> threading.Semaphore | None:
        size = self.limits.daemon_workers if daemon else self.limits.proxy_workers
        if not size:
            return None
        key = (node, "daemon" if daemon else "proxy", size)
        with self._lock:
            return self._pools.setdefault(key, threading.Semaphore(size))

    def vm_lock(self, vmid: int) -> threading.Lock:
        with self._lock:
            return self._vm_locks.setdefault(vmid, threading.Lock())

    def hold_lock(self, vmid: int, seconds: float) -> None:
        """Another holder of a VM's config lock (a backup, an operator's ``qm set``) for
        ``seconds``: taken now, released by a timer thread."""
        lock = self.vm_lock(vmid)
        lock.acquire()
        threading.Timer(seconds, lock.release).start()

    def _count(self, key: str, delta: int, stat: str = "most_waiting") -> None:
        with self._lock:
            n = self._waiting[key] = self._waiting.get(key, 0) + delta
            if n > self.stats[stat]:
                self.stats[stat] = n

    def run(self, node: str, daemon: bool, proxied: bool, vmid: int | None,
            work: Callable[[], Any]) -> Any:
        """Run ``work`` as node ``node``'s pvedaemon (``daemon``) or pveproxy worker would:
        wait for a worker, hold it for api_time_ms (and the VM's config lock, when ``vmid``),
        then do the change. ``proxied``: the client waits at most proxy_timeout_s
        (:class:`ProxyTimeout`; the request still runs when a worker frees)."""
        self._count(node, 1, "most_in_flight")
        try:
            return self._run(node, daemon, proxied, vmid, work)
        finally:
            self._count(node, -1, "most_in_flight")

    def _run(self, node: str, daemon: bool, proxied: bool, vmid: int | None,
             work: Callable[[], Any]) -> Any:
        limits = self.limits
        pool = self._pool(node, daemon)
        start = time.monotonic()
        if pool is not None:
            key = f"{node}/{'daemon' if daemon else 'proxy'}"
            self._count(key, 1)
            got = pool.acquire(timeout=limits.proxy_timeout_s if proxied else None)
            self._count(key, -1)
            if not got:
                with self._lock:
                    self.stats["proxy_timeouts"] += 1
                threading.Thread(target=self._late, args=(pool, vmid, work),
                                 daemon=True).start()
                raise ProxyTimeout()
        try:
            result = self._in_worker(vmid, work)
        finally:
            if pool is not None:
                pool.release()
        if proxied and time.monotonic() - start > limits.proxy_timeout_s:
            with self._lock:
                self.stats["proxy_timeouts"] += 1
            raise ProxyTimeout()
        return result

    def _in_worker(self, vmid: int | None, work: Callable[[], Any]) -> Any:
        seconds = self.limits.api_time_ms / 1000.0
        if vmid is None:
            if seconds:
                time.sleep(seconds)
            return work()
        lock = self.vm_lock(vmid)
        if not lock.acquire(timeout=self.limits.lock_wait_s):
            with self._lock:
                self.stats["lock_timeouts"] += 1
            raise PVEError(lock_timeout_msg(vmid))
        try:
            if seconds:
                time.sleep(seconds)
            return work()
        finally:
            lock.release()

    def _late(self, pool: threading.Semaphore, vmid: int | None,
              work: Callable[[], Any]) -> None:
        """A request whose client was answered 596 runs once a worker takes it."""
        pool.acquire()
        try:
            with self._lock:
                self.stats["late_runs"] += 1
            self._in_worker(vmid, work)
        except Exception:  # noqa: BLE001 - nobody waits for its answer any more
            pass
        finally:
            pool.release()
