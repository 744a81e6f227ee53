"""Secrets out of parked messages: what is kept in ``dead_letters.body`` and the dead queue.

A refused message may carry a secret its sender should never have put there (a ``password``
field, a token). :func:`redact_body` replaces the value of every field whose name looks like a
secret, at any depth, with ``"[redacted]"``; a body without one is returned byte for byte, so
what operators replay is what was sent. A body that is not JSON gets the same treatment by
pattern (``"password": "..."``, ``password=...``)."""

from __future__ import annotations

import json
import re
from typing import Any

REDACTED = "[redacted]"
# Field names treated as secrets (compared lower-cased, ignoring '-' and '_').
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey",
                 "credential")
_SECRET_NAME = (r"[\w-]*(?:pass(?:word|wd|phrase)|secret|token|api[_-]?key|private[_-]?key"
                r"|credential)[\w-]*")
_JSON_PAIR = re.compile(
    rf'("{_SECRET_NAME}"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\]\s]+)', re.IGNORECASE)
_KEY_VALUE = re.compile(rf"\b({_SECRET_NAME}\s*=\s*)([^&\s,;]+)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    squashed = name.lower().replace("-", "").replace("_", "")
    return any(word in squashed for word in _SECRET_WORDS)


def _scrub(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict):
        out, changed = {}, False
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key):
                out[key], changed = REDACTED, True
            else:
                out[key], sub = _scrub(item)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [_scrub(item) for item in value]
        return [i for i, _ in items], any(c for _, c in items)
    return value, False


def _int_or_text(text: str) -> int | str:
    return int(text) if len(text) <= 1000 else text  # past Python's int-parsing limit: keep text


def redact_body(body: bytes) -> bytes:
    """``body`` with every secret-looking field's value replaced; unchanged when it has none.
    A redacted JSON body is re-serialised (compact, UTF-8): it is for reading, not replaying."""
    try:
        data = json.loads(body, parse_int=_int_or_text)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
        redacted = _KEY_VALUE.sub(rf"\1{REDACTED}", _JSON_PAIR.sub(rf'\1"{REDACTED}"', text))
        return body if redacted == text else redacted.encode("utf-8")
    scrubbed, changed = _scrub(data)
    if not changed:
        return body
    return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace")


MAX_REASON = 1000  # publish_dead keeps this much of a reason in its header


def safe_reason(reason: str) -> str:
    """A refusal reason fit for a TEXT column and an AMQP header: valid UTF-8, no control
    characters, at most ``MAX_REASON`` characters."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."
