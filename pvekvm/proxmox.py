"""The Proxmox VE client used by steps: proxmoxer over HTTPS with an API token, one keep-alive
session per thread and endpoint (every node's API, :mod:`pvekvm.endpoints`), errors sorted by
:mod:`pvekvm.pveerrors` into transient (retry later), refusals (the request can never succeed:
fail it) and faults (stop visibly), and the time spent inside Proxmox calls counted
per thread (the engine-overhead benchmark uses it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.backends.https import JsonSerializer
from proxmoxer.core import ResourceException
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from pvekvm import endpoints, metrics, pveerrors
from pvekvm.config import ProxmoxSettings
from pvekvm.pvehttp import TransportError

FIRST_RETRY_S = 0.05  # pause before repeating a call that may be repeated


class ProxmoxError(Exception):
    """A Proxmox call failed. ``transient`` says whether trying again later can succeed;
    ``refusal`` that PVE refused the request itself (it can never succeed as asked: the
    operation fails at once); neither = a fault for an operator. ``not_sent``: the request
    never reached PVE (no connection was made), so even a POST can be repeated at once."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None,
                 not_sent: bool = False, refusal: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.refusal = refusal and not transient
        self.status = status
        self.not_sent = not_sent
        self.method = "get"  # the HTTP method of the call that failed


def _classify(exc: Exception) -> ProxmoxError:
    if isinstance(exc, ProxmoxError):
        return exc
    if isinstance(exc, ResourceException):
        # PVE's message is the reason phrase (``content``); status_message is the generic one
        detail = str(exc.content or "").strip() or exc.status_message or ""
        if exc.errors:
            detail = f"{detail} {pveerrors.errors_text(exc.errors)}".strip()
        kind = pveerrors.classify(exc.status_code, detail)
        return ProxmoxError(detail or f"HTTP {exc.status_code}", status=exc.status_code,
                            transient=kind is pveerrors.Kind.TRANSIENT,
                            refusal=kind is pveerrors.Kind.REFUSAL)
    if isinstance(exc, TransportError):
        return ProxmoxError(f"connection problem: {exc}", transient=True, not_sent=exc.not_sent)
    if isinstance(exc, requests.RequestException):
        not_sent = isinstance(exc, requests.ConnectTimeout) or (
            isinstance(exc, requests.ConnectionError)
            and "NewConnectionError" in repr(exc.args))
        return ProxmoxError(f"connection problem: {exc}", transient=True, not_sent=not_sent)
    return ProxmoxError(str(exc), transient=False)


def task_failure(exitstatus: str | None) -> ProxmoxError:
    """A PVE task that ended without success: a refusal when its exitstatus is one
    (``snapshot name 'x' already used``), else transient (retried, then paused: a task fails
    for many passing reasons, so its fault patterns do not pause at once)."""
    text = exitstatus or "no exit status"
    refusal = pveerrors.classify(None, text) is pveerrors.Kind.REFUSAL
    return ProxmoxError(f"task failed: {text}", transient=not refusal, refusal=refusal)


def _safe_to_repeat(exc: BaseException) -> bool:
    """Retry inline only what cannot have been done twice: a read that failed transiently,
    or any call that never reached PVE. A POST/PUT/DELETE that may have been carried out is
    left to the step, which looks at Proxmox before trying again (steps are idempotent)."""
    if not isinstance(exc, ProxmoxError) or not exc.transient:
        return False
    return exc.not_sent or exc.method == "get"


class _FastJson(JsonSerializer):  # type: ignore[misc]  # proxmoxer ships no types
    """proxmoxer's serializer decoding with orjson: ``/cluster/resources`` of 1,000 VMs
    (260 KB) decodes in ~1.2 ms instead of ~2.5 ms (a placement reads it every time). The
    same answers: bytes that are not UTF-8 JSON give ``{"errors": body}`` as before."""

    def loads(self, response: Any) -> Any:
        try:
            return orjson.loads(response.content)["data"]
        except ValueError:  # orjson.JSONDecodeError, invalid UTF-8 included
            return {"errors": response.content}


@dataclass(frozen=True)
class TaskStatus:
    running: bool
    exitstatus: str | None

    @property
    def ok(self) -> bool:
        """A stopped task succeeded only with ``OK`` or ``WARNINGS: N``."""
        status = self.exitstatus or ""
        return not self.running and (status == "OK" or status.startswith("WARNINGS"))


class Proxmox:
    """Thin typed facade over proxmoxer: ``get/post/put/delete(path, **params)``."""

    _timing = threading.local()

    def __init__(self, settings: ProxmoxSettings, timeout: float = 30.0) -> None:
        user, _, token = settings.token_id.partition("!")
        self._api = ProxmoxAPI(
            settings.host, port=settings.port, user=user, token_name=token,
            token_value=settings.token_secret, verify_ssl=settings.ca_bundle,
            backend="https", timeout=timeout)
        token_header = f"PVEAPIToken={settings.token_id}={settings.token_secret}"
        self.endpoints = endpoints.endpoints(settings.urls, settings.endpoint_retry_s,
                                             settings.max_calls_per_node)
        self._api._store["session"] = endpoints.FailoverSession(
            self.endpoints, token_header, settings.ca_bundle, timeout)
        self._api._store["serializer"] = _FastJson()

    @classmethod
    def time_spent(cls) -> float:
        """Seconds this thread has spent inside Proxmox calls or waiting for Proxmox tasks."""
        return getattr(cls._timing, "seconds", 0.0)

    @classmethod
    def wait_for_task(cls, seconds: float) -> None:
        """Pause between two looks at a running task (counted as Proxmox time)."""
        time.sleep(seconds)
        cls._timing.seconds = getattr(cls._timing, "seconds", 0.0) + seconds

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        """One call; what is safe to repeat is tried twice more (3 in all). The first try
        runs outside tenacity: its wrapper cost ~0.3 ms of CPU on every call, retried or not."""
        try:
            return self._call_once(method, path, params)
        except ProxmoxError as exc:
            if not _safe_to_repeat(exc):
                raise
        time.sleep(FIRST_RETRY_S)
        return self._call_again(method, path, params)

    @retry(retry=retry_if_exception(_safe_to_repeat), stop=stop_after_attempt(2),
           wait=wait_exponential(multiplier=0.1, max=0.5), reraise=True)
    def _call_again(self, method: str, path: str, params: dict[str, Any]) -> Any:
        return self._call_once(method, path, params)

    def _call_once(self, method: str, path: str, params: dict[str, Any]) -> Any:
        start, error = time.perf_counter(), None
        try:
            return getattr(self._api(path.strip("/")), method)(**params)
        except Exception as exc:  # sorted into transient/permanent
            error = _classify(exc)
            error.method = method
            raise error from exc
        finally:
            t, spent = self._timing, time.perf_counter() - start
            t.seconds = getattr(t, "seconds", 0.0) + spent
            metrics.observe_proxmox(method, path, spent, error)

    def get(self, path: str, **params: Any) -> Any:
        return self._call("get", path, params)

    def post(self, path: str, **params: Any) -> Any:
        return self._call("post", path, params)

    def put(self, path: str, **params: Any) -> Any:
        return self._call("put", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        return self._call("delete", path, params)

    # --- helpers shared by steps -------------------------------------------------------------

    def locate(self, vmid: int, hint: str | None = None) -> str | None:
        """The node a VM lives on, or None when it does not exist anywhere. Asks first with one
        small call — the ``hint`` node we last saw it on, or without a hint whether the VMID is
        still unused (``cluster/nextid?vmid=``) — and lists the cluster's VMs (a large answer
        on a busy cluster) only when that does not settle it."""
        try:
            if hint:
                self.get(f"nodes/{hint}/qemu/{vmid}/status/current")
                return hint
            self.get("cluster/nextid", vmid=vmid)
            return None  # unused: it exists nowhere
        except ProxmoxError as exc:
            if exc.transient or exc.status not in (400, 500):
                raise
        for res in self.get("cluster/resources", type="vm"):
            if int(res.get("vmid", -1)) == vmid:
                return str(res["node"]) if res.get("node") is not None else None
        return None

    def find_vm(self, vmid: int, hint: str | None) -> tuple[str, dict[str, Any]] | None:
        """Where a VM lives and its configuration, or None when it exists nowhere: one call
        when ``hint`` (the node we last saw it on) is right, as PVE answers a config read on
        another node with 'Configuration file ... does not exist'; else :meth:`locate`."""
        if hint:
            try:
                return hint, self.vm_config(hint, vmid)
            except ProxmoxError as exc:
                if exc.transient or exc.status not in (400, 500):
                    raise
        node = self.locate(vmid)
        return (node, self.vm_config(node, vmid)) if node is not None else None

    def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        config: dict[str, Any] = self.get(f"nodes/{node}/qemu/{vmid}/config")
        return config

    def task_status(self, node: str, upid: str, fresh: bool = True) -> TaskStatus:
        """``fresh``: the task was dispatched moments ago, when PVE may answer 400 for it."""
        try:
            st = self.get(f"nodes/{node}/tasks/{quote(upid, safe='')}/status")
        except ProxmoxError as exc:
            if exc.status == 400 and fresh:
                return TaskStatus(running=True, exitstatus=None)
            raise
        return TaskStatus(running=st.get("status") == "running", exitstatus=st.get("exitstatus"))


_clients = threading.local()


def client(settings: ProxmoxSettings) -> Proxmox:
    """This thread's client for ``settings`` (one keep-alive session per thread)."""
    cache: dict[ProxmoxSettings, Proxmox] = getattr(_clients, "cache", None) or {}
    _clients.cache = cache
    if settings not in cache:
        cache[settings] = Proxmox(settings)
    return cache[settings]
