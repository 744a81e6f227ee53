"""Route registry: handlers register ``(method, schema path)``; the server dispatches here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .schema import template_regex

if TYPE_CHECKING:
    from .server import Simulator


@dataclass
class Ctx:
    """Per-request context handed to handlers."""

    sim: Simulator
    user: str  # "root@pam" or "root@pam!tokenname"
    params: dict[str, Any]

    @property
    def cluster(self):  # convenience alias
        return self.sim.cluster


Handler = Callable[[Ctx, dict[str, Any]], Any]

#: (method, template) -> handler
ROUTES: dict[tuple[str, str], Handler] = {}
#: first path segment -> [(regex, template)] for fast matching
_INDEX: dict[str, list[tuple[re.Pattern[str], str]]] = {}


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for a schema path (must exist in the PVE schema, see tests)."""

    def deco(fn: Handler) -> Handler:
        key = (method, template)
        if key in ROUTES:
            raise ValueError(f"duplicate route {method} {template}")
        ROUTES[key] = fn
        bucket = _INDEX.setdefault(_head(template), [])
        if not any(t == template for _, t in bucket):
            bucket.append((template_regex(template), template))
            # more literal segments first so '/x/{a}' does not shadow '/x/status'
            bucket.sort(key=lambda e: (e[1].count("/"), -e[1].count("{")), reverse=True)
        return fn

    return deco


def _head(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """Find the served template for a concrete path; returns (template, path params)."""
    for rx, template in _INDEX.get(_head(path), ()):
        m = rx.match(path)
        if m:
            names = re.findall(r"\{([\w-]+)\}", template)
            return template, {n: m.group(n.replace("-", "_")) for n in names}
    return None


def served_methods(template: str) -> list[str]:
    return [m for (m, t) in ROUTES if t == template]
