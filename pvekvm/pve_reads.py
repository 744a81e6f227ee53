"""Proxmox reads for the API: one proxmoxer session per thread over every endpoint of the cluster
(pvekvm/endpoints.py: one that cannot be reached is skipped), a short timeout and no retry, so
a request answers promptly (with ``proxmox_unreachable``) when PVE is down."""

from __future__ import annotations

import threading
from typing import Any

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvekvm import endpoints
from pvekvm.config import ProxmoxSettings
from pvekvm.pvehttp import TransportError


class Unreachable(Exception):
    """No answer from Proxmox (connection refused, timeout, TLS failure)."""


class PveError(Exception):
    """Proxmox answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_local = threading.local()


def _api(settings: ProxmoxSettings, timeout: float) -> ProxmoxAPI:
    cache: dict[tuple[ProxmoxSettings, float], ProxmoxAPI] = getattr(_local, "cache", None) or {}
    _local.cache = cache
    key = (settings, timeout)
    if key not in cache:
        user, _, token = settings.token_id.partition("!")
        api = ProxmoxAPI(settings.host, port=settings.port, user=user, token_name=token,
                         token_value=settings.token_secret, verify_ssl=settings.ca_bundle,
                         backend="https", timeout=timeout)
        state = endpoints.endpoints(settings.urls, settings.endpoint_retry_s,
                                    settings.max_calls_per_node)
        api._store["session"] = endpoints.FailoverSession(
            state, f"PVEAPIToken={settings.token_id}={settings.token_secret}",
            settings.ca_bundle, timeout)
        cache[key] = api
    return cache[key]


def call(settings: ProxmoxSettings | None, timeout: float, method: str, path: str,
         **params: Any) -> Any:
    if settings is None:
        raise Unreachable("no Proxmox configured")
    try:
        return getattr(_api(settings, timeout)(path), method)(**params)
    except ResourceException as exc:
        raise PveError(exc.status_code, (exc.status_message or "").strip()) from exc
    except TransportError as exc:
        raise Unreachable(str(exc)) from exc
