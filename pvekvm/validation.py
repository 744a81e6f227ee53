"""Input rules shared by producers, intake and the DNS providers."""

from __future__ import annotations

import ipaddress
import re

import idna

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
    them as addresses), more than 253 octets. Punycode: an ``xn--`` label (IDNA A-label) must
    decode to a U-label that IDNA 2008 (RFC 5891/5892, the ``idna`` package's tables) permits
    and encode back to exactly the same A-label; Unicode names must be sent in that A-label form;
    other labels with ``--`` in positions 3-4 are reserved (RFC 5891 §4.2.3.1) and refused.
    Reasons name a label by its position, never echo it."""
    if len(name) > 253:
        return f"longer than 253 octets ({len(name)})"
    if name == "localhost" or name.endswith(".localhost"):
        return "localhost is reserved"
    if is_valid_ip(name):
        return "an IP address is not a host name"
    labels = name.split(".")
    if labels[-1].isdigit():
        return "the last label is all digits (reads as an IP address)"
    for number, label in enumerate(labels, 1):
        if label[2:4] != "--":
            continue
        if not label.startswith("xn--"):
            return f"label {number}: '--' in positions 3-4 is reserved for xn-- labels"
        if not is_idna2008_a_label(label):
            return f"label {number}: not an IDNA 2008 A-label (punycode of permitted code points)"
    return None


def is_idna2008_a_label(label: str) -> bool:
    """``xn--`` + punycode whose U-label IDNA 2008 permits (code points PVALID or with their
    CONTEXTJ/CONTEXTO rule met, NFC, hyphen and bidi rules) and which re-encodes to the same
    A-label: ``xn--bcher-kva`` (bücher) yes, ``xn--n3h`` (U+2603, a symbol: DISALLOWED) no.
    Bounded work: a label is at most 63 octets."""
    try:
        unicode = idna.ulabel(label)
        return not unicode.isascii() and idna.alabel(unicode).decode("ascii") == label
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
