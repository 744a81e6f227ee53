"""One HTTP call with a time-out, mapping transport failures to DnsError."""

from __future__ import annotations

import ipaddress
from typing import Any

import requests

from .model import DnsError

DEFAULT_TIMEOUT = 5.0


def timeout_of(settings: dict[str, Any]) -> float:
    value = settings.get("timeout", DEFAULT_TIMEOUT)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid timeout setting: {value!r}") from None
    if not 0 < value <= 120:
        raise ValueError(f"timeout setting out of range: {value}")
    return value


def call(
    session: requests.Session, method: str, url: str, *, where: str, timeout: float,
    **kwargs: Any
) -> requests.Response:
    """``where`` names provider, zone and action for the error message (never credentials)."""
    try:
        return session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise DnsError(f"{where}: no answer within {timeout:g}s", transient=True) from None
    except requests.ConnectionError as exc:
        reason = type(exc).__name__
        raise DnsError(f"{where}: cannot connect ({reason})", transient=True) from None
    except requests.RequestException as exc:
        raise DnsError(f"{where}: request failed: {type(exc).__name__}", transient=False) from None


def status_transient(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def same_content(rtype: str, a: str, b: str) -> bool:
    """Compare record contents the way DNS does: IPs by value, names case- and dot-insensitive."""
    if rtype in ("A", "AAAA"):
        try:
            return ipaddress.ip_address(a.strip()) == ipaddress.ip_address(b.strip())
        except ValueError:
            return False
    return a.strip().lower().rstrip(".") == b.strip().lower().rstrip(".")
