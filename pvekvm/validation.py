"""Input rules shared by producers, intake and the DNS providers."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def is_valid_hostname(name: object) -> bool:
    """True for an RFC 1123 host name: dot-separated labels of [a-z0-9-], no leading or trailing
    hyphen, each 1-63 characters, at most 253 in all. Case-insensitive; a trailing dot is fine."""
    if not isinstance(name, str) or not name or not name.isascii():
        return False
    host = name[:-1] if name.endswith(".") else name
    if not host or len(host) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in host.lower().split("."))


def is_valid_ip(value: object, version: int | None = None) -> bool:
    """True for a textual IPv4/IPv6 address (of the given version when one is given)."""
    if not isinstance(value, str):
        return False
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or addr.version == version
