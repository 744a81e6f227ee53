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


def service_hostname_problem(name: str) -> str | None:
    """Why ``name`` (already RFC 1123, lower case, no trailing dot) may not name a VM, or None.

    Refused: ``localhost`` and names under ``.localhost`` (RFC 6761), bare IP addresses and any
    name whose last label is all digits (``10.0.0.1``, ``127.1``: RFC 3696 §2, resolvers read
    them as addresses), more than 253 octets. Punycode: ``xn--`` labels (IDNA A-labels) are
    accepted when their tail decodes as punycode and compared as ASCII; Unicode names must be
    sent in that A-label form; other labels with ``--`` in positions 3-4 are reserved
    (RFC 5891 §4.2.3.1) and refused."""
    if len(name) > 253:
        return f"longer than 253 octets ({len(name)})"
    if name == "localhost" or name.endswith(".localhost"):
        return "localhost is reserved"
    if is_valid_ip(name):
        return "an IP address is not a host name"
    labels = name.split(".")
    if labels[-1].isdigit():
        return "the last label is all digits (reads as an IP address)"
    for label in labels:
        if label[2:4] != "--":
            continue
        if not label.startswith("xn--"):
            return f"label {label!r}: '--' in positions 3-4 is reserved for xn-- labels"
        if not _is_a_label(label):
            return f"label {label!r}: not a valid punycode (IDNA A-label) label"
    return None


def _is_a_label(label: str) -> bool:
    """``xn--`` + punycode that decodes to a non-ASCII, printable U-label and back again."""
    tail = label[4:]
    try:
        unicode = tail.encode("ascii").decode("punycode")
    except UnicodeError:
        return False
    return (bool(unicode) and not unicode.isascii() and unicode.isprintable()
            and unicode.encode("punycode").decode("ascii") == tail)
