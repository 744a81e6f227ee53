"""JSON from untrusted bytes in linear time, with bounds: every place that decodes what a
client (or anyone who can publish) sent goes through :func:`loads`.

Invariants: a body over ``max_bytes`` is refused before it is read; one nested deeper than
``max_depth`` is refused by a pre-scan (one regex pass that steps over strings, then a running
sum of the brackets, both linear) before the decoder sees it, so the decoder never recurses
past ``max_depth`` and no ``RecursionError`` can come out of here; every refusal is a
:class:`JsonRefused` (a ``ValueError``) whose ``reason`` says what was wrong."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

WIRE_MAX_BYTES = 64 * 1024  # the largest message decoded from a wire (an order event's limit)
MAX_DEPTH = 32  # an order event is 2 deep; nothing the engine reads from a wire needs more
# A string, its end quote optional (an unterminated one runs to the end, so each character is
# looked at once); possessive: no backtracking.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonRefused(ValueError):
    """Bytes that are not JSON the engine will decode; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def depth(text: str) -> int:
    """How deep ``text`` nests arrays and objects (brackets inside strings do not count)."""
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def decode_text(body: bytes | bytearray | str, max_bytes: int | None = None) -> str:
    """``body`` as text (UTF-8, or the UTF-16/32 JSON allows), refused past ``max_bytes``."""
    if max_bytes is not None and len(body) > max_bytes:
        raise JsonRefused(f"too large: {len(body)} bytes (max {max_bytes})")
    if isinstance(body, str):
        return body
    raw = bytes(body)
    try:
        return raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"invalid UTF-8 ({exc.reason})") from None


def loads(body: bytes | bytearray | str, *, max_bytes: int | None = None,
          max_depth: int = MAX_DEPTH, **options: Any) -> Any:
    """``json.loads(body, **options)`` within the bounds; :class:`JsonRefused` otherwise.
    Errors raised by the hooks in ``options`` pass through as they are."""
    text = decode_text(body, max_bytes)
    nested = depth(text)
    if nested > max_depth:
        raise JsonRefused(f"nested {nested} levels deep (max {max_depth})")
    try:
        return json.loads(text, **options)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # cannot happen under the depth bound; refused all the same
        raise JsonRefused(f"nested too deeply (max {max_depth})") from None
