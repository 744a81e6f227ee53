"""The ``webhook`` provider: one signed HTTP POST per rrset change, for any DNS the other
providers do not reach (the manual's legacy "DNS API proxy" in front of a ``dns.php``).

Signed the Standard Webhooks way (the scheme of pvekvm's billing webhooks: one verifier serves
both): headers ``webhook-id`` (unique per call), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)),
the key being the bytes of the ``whsec_<base64>`` secret (a list of two while the receiver's
is rotated: a signature by each, space-separated, as the scheme allows). The body is one line
of ASCII JSON:

    {"action": "replace", "zone": Z, "name": N, "type": "A", "contents": [...], "ttl": 3600}
    {"action": "delete", "zone": Z, "name": N, "type": "PTR"}
    {"action": "probe", "zone": Z}                  (python -m pvekvm check; changes nothing)

Names are FQDNs without trailing dot, validated (RFC 1123, inside the zone) before any call.
The receiver answers 2xx once the change is made (replace and delete are idempotent: a call
repeated after a lost answer changes nothing); 4xx is a refusal, recorded with the reason the
body gives (``{"error": "..."}`` or text); 5xx, 408 and 429 are retried later. Redirects are
not followed. Error messages name the endpoint as scheme://host:port only (a token in the
URL's path or query is never shown).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import requests

from ._http import call, snippet, status_transient, timeout_of
from .model import RECORD_TYPES, DnsError

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 16
MAX_REASON_BYTES = 2048


def _secret_bytes(secret: object) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (never echoing it) otherwise."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook: secret must be whsec_ followed by base64 (Standard "
                         "Webhooks), e.g. whsec_$(head -c 32 /dev/urandom | base64)")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("webhook: secret after whsec_ is not base64") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"webhook: secret must hold at least {MIN_SECRET_BYTES} bytes")
    return raw


def _keys(secret: object) -> list[bytes]:
    """One secret, or a list of two while the receiver's is rotated (each call then carries
    a signature by each: the receiver accepts either)."""
    if isinstance(secret, list):
        if not 1 <= len(secret) <= 2:
            raise ValueError("webhook: secret is one whsec_ secret, or a list of two while "
                             "rotating")
        return [_secret_bytes(s) for s in secret]
    return [_secret_bytes(secret)]


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_settings(settings: dict[str, Any]) -> None:
    """ValueError for settings every call would fail with."""
    url = settings.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or any(c in str(url) for c in "\r\n\t ") or not str(url).isascii():
        raise ValueError("webhook: url must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("webhook: no credentials in url: the secret signs each call")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ValueError("webhook: url has an invalid port") from None
    _keys(settings.get("secret"))
    if not isinstance(settings.get("verify_tls", True), bool):
        raise ValueError("webhook: verify_tls must be true or false")


def sign(keys: list[bytes], msg_id: str, timestamp: str, body: bytes) -> str:
    """The webhook-signature header: one space-separated ``v1,<base64>`` per key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest())
                    .decode() for k in keys)


class WebhookProvider:
    """Settings: url, secret (whsec_<base64>, or a list of two while rotating), verify_tls
    (default true), timeout (seconds, default 5)."""

    name = "webhook"

    def __init__(self, settings: dict[str, Any], session: requests.Session | None = None) -> None:
        check_settings(settings)
        self.url = str(settings["url"])
        self._keys = _keys(settings["secret"])
        self.verify = bool(settings.get("verify_tls", True))
        self.timeout = timeout_of(settings)
        self.session = session or requests.Session()

    def __repr__(self) -> str:
        return f"WebhookProvider({_endpoint(self.url)})"

    def _post(self, payload: dict[str, Any], where: str) -> None:
        where = f"webhook {_endpoint(self.url)} {where}"
        body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()
        msg_id = f"dns_{uuid.uuid4().hex}"
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": stamp,
                   "webhook-signature": sign(self._keys, msg_id, stamp, body)}
        resp = call(self.session, "POST", self.url, where=where, timeout=self.timeout,
                    data=body, headers=headers, verify=self.verify, stream=True)
        try:
            if 200 <= resp.status_code < 300:
                return
            raw = resp.raw.read(MAX_REASON_BYTES, decode_content=True) or b""
        except (requests.RequestException, OSError):
            raw = b""
        finally:
            resp.close()
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
            reason = parsed.get("error") if isinstance(parsed, dict) else None
        except ValueError:
            reason = None
        detail = snippet("".join(c if c.isprintable() else " " for c in str(reason or text)))
        status = resp.status_code
        if 300 <= status < 400:
            raise DnsError(f"{where}: HTTP {status} redirect, not followed: set url to where "
                           "the receiver answers")
        if status in (401, 403):
            raise DnsError(f"{where}: the receiver refused the signature (HTTP {status}): "
                           f"secret differs from the receiver's? {detail}".rstrip())
        raise DnsError(f"{where}: HTTP {status}: {detail}".rstrip(": "),
                       transient=status_transient(status))

    @staticmethod
    def _checked(zone: str, name: str, rtype: str) -> None:
        """Belt and braces behind plan.check_record: nothing outside the zone leaves here."""
        if rtype not in RECORD_TYPES:
            raise ValueError(f"unsupported record type {str(rtype)[:10]!r}")
        if not (name == zone or name.endswith("." + zone)) or len(name) > 253 \
                or not name.isascii() or not all(c.isalnum() or c in ".-/" for c in name):
            raise ValueError(f"record {name[:80]!r} is not inside zone {zone!r}")

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        self._checked(zone, name, type)
        self._post({"action": "replace", "zone": zone, "name": name, "type": type,
                    "contents": list(contents), "ttl": int(ttl)}, f"replace {type} {name}")

    def delete(self, zone: str, name: str, type: str) -> None:
        self._checked(zone, name, type)
        self._post({"action": "delete", "zone": zone, "name": name, "type": type},
                   f"delete {type} {name}")

    def probe(self, zone: str) -> None:
        self._post({"action": "probe", "zone": zone}, f"zone {zone}: probe")
