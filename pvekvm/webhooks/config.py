"""Webhook settings: ``[[webhooks]]`` (one table per endpoint the provider registers in the
settings file) and ``[webhook_delivery]`` (how every deliverer sends). Parsed here; the settings
loader (:mod:`pvekvm.config`) calls :func:`parse` and names the file in any error.

```toml
[[webhooks]]
name = "whmcs"                                   # letters, digits, . _ -; unique
url = "https://billing.example.net/pvekvm_webhook.php"
secrets = ["whsec_NEW...", "whsec_OLD..."]       # or secret = "whsec_..."; newest first: each
                                                 # signs, so a rotation has both valid at once
event_types = ["service.*", "operation.failed"]  # "type", "prefix.*" or "*" (default: all)
scope = "brand-a"                                # optional: a billing token name; then only
                                                 # the services of its [api.scopes]

[webhook_delivery]
timeout_s = 10.0          # one attempt, connect to the last header byte (the body is not read)
lease_s = 30.0            # a deliverer's claim on a service's stream; > timeout_s + 2
retry_first_s = 5.0       # backoff after the first failure, doubling ...
retry_max_s = 3600.0      # ... up to this
retry_for_s = 86400.0     # then the stream is parked with the last reason
poll_s = 0.5              # how often an idle deliverer looks for work
api_allowed_networks = [] # non-public networks an API-registered URL may reach ("127.0.0.0/8")
api_max_endpoints = 10    # endpoints one billing token may register over the API
endpoint_concurrency = 4  # attempts in flight per endpoint in one deliverer (0: no limit)
feed_max_wait_s = 30.0    # the longest long-poll of GET /v1/events
keep_delivered_days = 7.0 # delivered rows are kept this long (the backlog never is pruned)
```
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
EVENT_TYPE = re.compile(r"\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?")
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
MAX_URL = 2048
ENDPOINT_KEYS = {"name", "url", "secret", "secrets", "event_types", "scope"}


@dataclass(frozen=True)
class EndpointSetting:
    """One ``[[webhooks]]`` table. Trusted: its URL may point anywhere (loopback included)."""

    name: str
    url: str
    secrets: tuple[str, ...]
    event_types: tuple[str, ...] = ("*",)
    scope: str | None = None


@dataclass(frozen=True)
class DeliverySettings:
    timeout_s: float = 10.0
    lease_s: float = 30.0
    retry_first_s: float = 5.0
    retry_max_s: float = 3600.0
    retry_for_s: float = 86400.0
    poll_s: float = 0.5
    api_allowed_networks: tuple[str, ...] = ()
    api_max_endpoints: int = 10
    endpoint_concurrency: int = 4
    feed_max_wait_s: float = 30.0
    keep_delivered_days: float = 7.0

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.api_allowed_networks]


@dataclass(frozen=True)
class WebhookSettings:
    endpoints: tuple[EndpointSetting, ...] = ()
    delivery: DeliverySettings = field(default_factory=DeliverySettings)


def secret_problem(secret: object) -> str | None:
    """Why ``secret`` is not a Standard Webhooks secret (``whsec_`` + base64 of 24 to 64
    bytes), or None. Never repeats the value."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return "a secret is 'whsec_' followed by base64"
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return "a secret is 'whsec_' followed by base64 (this is not base64)"
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        return (f"a secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes "
                f"(this one holds {len(raw)})")
    return None


def event_types_problem(types: object) -> str | None:
    if not isinstance(types, list | tuple) or not types or len(types) > 50:
        return "event_types: expected a non-empty list of at most 50 types"
    for t in types:
        if not isinstance(t, str) or len(t) > 64 or not EVENT_TYPE.fullmatch(t):
            return ("event_types: each is a type (service.ready), a prefix with .* "
                    "(operation.*) or *")
    return None


def url_syntax_problem(url: object) -> str | None:
    """Why ``url`` is not an http(s) URL the deliverer can POST to, or None."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        return f"url: expected an http:// or https:// URL of at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "url: not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url: expected an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "url: credentials in the URL are refused (the signature authenticates)"
    if parts.fragment or any(c.isspace() or ord(c) < 32 for c in url):
        return "url: no fragment, spaces or control characters"
    if port == 0:
        return "url: port 0"
    return None


def matches(types: tuple[str, ...] | list[str], event_type: str) -> bool:
    """``event_type`` is one ``types`` asks for (``*``, ``prefix.*`` or the type itself)."""
    for t in types:
        if t == "*" or t == event_type or (t.endswith(".*")
                                            and event_type.startswith(t[:-1])):
            return True
    return False


def parse(endpoints_raw: object, delivery_raw: object, where: str,
          token_names: set[str]) -> WebhookSettings:
    """``[[webhooks]]`` and ``[webhook_delivery]`` of the file named ``where``; ValueError with
    the file and key of the first wrong setting."""
    if endpoints_raw is None:
        endpoints_raw = []
    if not isinstance(endpoints_raw, list) or not all(isinstance(e, dict)
                                                      for e in endpoints_raw):
        raise ValueError(f"{where} [[webhooks]]: expected tables ([[webhooks]] name, url, ...)")
    endpoints, seen = [], set()
    for i, raw in enumerate(endpoints_raw):
        at = f"{where} [[webhooks]] #{i + 1}"
        unknown = set(raw) - ENDPOINT_KEYS
        if unknown:
            raise ValueError(f"{at}: unknown key {sorted(unknown)[0]!r} "
                             f"(known: {', '.join(sorted(ENDPOINT_KEYS))})")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{at} name: expected 1-64 letters, digits, '.', '_' or '-'")
        at = f"{where} [[webhooks]] {name}"
        if name in seen:
            raise ValueError(f"{at}: a second endpoint of that name")
        seen.add(name)
        problem = url_syntax_problem(raw.get("url"))
        if problem:
            raise ValueError(f"{at} {problem}")
        if ("secret" in raw) == ("secrets" in raw):
            raise ValueError(f"{at}: set secret = \"whsec_...\" or secrets = [newest, older]")
        secrets = raw["secrets"] if "secrets" in raw else [raw["secret"]]
        if not isinstance(secrets, list) or not 1 <= len(secrets) <= 2:
            raise ValueError(f"{at} secrets: expected one or two secrets (newest first)")
        for s in secrets:
            problem = secret_problem(s)
            if problem:
                raise ValueError(f"{at} secrets: {problem} "
                                 "(python -m pvekvm webhooks new-secret prints one)")
        types = raw.get("event_types", ["*"])
        problem = event_types_problem(types)
        if problem:
            raise ValueError(f"{at} {problem}")
        scope = raw.get("scope")
        if scope is not None and (not isinstance(scope, str) or scope not in token_names):
            raise ValueError(f"{at} scope: expected the name of a billing token in [api.tokens]")
        endpoints.append(EndpointSetting(name, raw["url"], tuple(secrets), tuple(types), scope))
    return WebhookSettings(tuple(endpoints), _delivery(delivery_raw or {}, where))


def _delivery(raw: object, where: str) -> DeliverySettings:
    at = f"{where} [webhook_delivery]"
    if not isinstance(raw, dict):
        raise ValueError(f"{at}: expected a table")
    known = {f.name for f in fields(DeliverySettings)}
    values: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in known:
            raise ValueError(f"{at}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(DeliverySettings(), key)
        if key == "api_allowed_networks":
            if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
                raise ValueError(f"{at} {key}: expected a list of networks (\"127.0.0.0/8\")")
            for n in v:
                try:
                    ipaddress.ip_network(n, strict=False)
                except ValueError:
                    raise ValueError(f"{at} {key}: {n!r} is not a network") from None
            values[key] = tuple(v)
        elif isinstance(default, float):
            if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{at} {key}: expected a positive number, got {v!r}")
            values[key] = float(v)
        else:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{at} {key}: expected a whole number >= 0, got {v!r}")
            values[key] = v
    out = DeliverySettings(**values)
    if out.lease_s < out.timeout_s + 2:
        raise ValueError(f"{at} lease_s: must be at least timeout_s + 2 ({out.timeout_s + 2}) so "
                         "a claim outlives the attempt it covers")
    if out.retry_max_s < out.retry_first_s:
        raise ValueError(f"{at} retry_max_s: must not be below retry_first_s")
    return out
