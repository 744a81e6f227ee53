"""Secrets out of parked messages: what is kept in ``dead_letters.body`` and the dead queue.

A refused message may carry a secret its sender should never have put there (a ``password``
field, a token). :func:`redact_body` replaces the value of every field whose name looks like a
secret (:func:`is_secret_name`), at any depth, with ``"[redacted]"``; a body without one is
returned byte for byte, so what operators replay is what was sent. A body that is not JSON
(or nests deeper than :data:`pvekvm.jsonsafe.MAX_DEPTH`) gets the same treatment by a scan of
its text (``"password": "..."``, ``password=...``, ``token: {...}``).

Linear time, whatever the bytes: the JSON path is bounded by :mod:`pvekvm.jsonsafe`; the text
scan looks at each character a bounded number of times (searches for the secret words, then
possessive, non-backtracking matches that resume where the previous one ended)."""

from __future__ import annotations

import json
import re
from typing import Any

from pvekvm import jsonsafe

REDACTED = "[redacted]"
# A field name is a secret's when, lower-cased and without '-' and '_', it contains one of
# these words, or ends in one of the endings (``pass``, ``root_pw``, Kickstart's ``rootpw``;
# ``bypass`` too: over-redacting a parked body costs less than one password kept).
_SECRET_WORDS = ("password", "passwd", "passphrase", "pwd", "secret", "token", "apikey",
                 "privatekey", "credential")
_SECRET_ENDINGS = ("pass", "pw")
# Where a secret's name may start: the first hit in a run of name characters.
_WORD = re.compile(r"pass(?:word|wd|phrase)?|pwd|pw|secret|token|api[-_]?key|private[-_]?key"
                   r"|credential", re.IGNORECASE)
_NAME_REST = re.compile(r"[\w-]*+")
_SEPARATOR = re.compile(r'"?[ \t]*+[:=][ \t\r\n]*+')  # after a name: "password": / token=
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)  # end quote optional: runs to the end
_GROUP_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[{]|[\]}]', re.DOTALL)
_BARE_VALUE = re.compile(r"[^&\s,;}\]]++")


def is_secret_name(name: str) -> bool:
    squashed = name.lower().replace("-", "").replace("_", "")
    return any(word in squashed for word in _SECRET_WORDS) or squashed.endswith(_SECRET_ENDINGS)


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


def _group_end(text: str, start: int) -> int:
    """Where the array or object opening at ``start`` closes (strings skipped), or the end."""
    level = 0
    for token in _GROUP_TOKEN.finditer(text, start):
        mark = token.group()
        if mark in "[{":
            level += 1
        elif mark in "]}":
            level -= 1
            if level == 0:
                return token.end()
    return len(text)


def _value_span(text: str, start: int) -> tuple[int, str] | None:
    """(end, replacement) of the value that begins at ``start``; None when there is none."""
    first = text[start:start + 1]
    if first == '"':
        match = _STRING.match(text, start)
        return (match.end() if match else len(text)), f'"{REDACTED}"'
    if first in ("[", "{"):
        return _group_end(text, start), f'"{REDACTED}"'
    bare = _BARE_VALUE.match(text, start)
    return (bare.end(), REDACTED) if bare else None


def redact_text(text: str) -> str:
    """``text`` with the value after every secret-named ``name=`` / ``"name":`` replaced."""
    pieces: list[str] = []
    kept = pos = 0  # text[kept:pos] is scanned and not yet copied out
    while (hit := _WORD.search(text, pos)) is not None:
        rest = _NAME_REST.match(text, hit.end())
        name_end = rest.end() if rest else hit.end()
        pos = name_end  # the whole run of name characters is decided by its first hit
        if not is_secret_name(text[hit.start():name_end]):
            continue
        sep = _SEPARATOR.match(text, name_end)
        if sep is None:
            continue
        span = _value_span(text, sep.end())
        if span is None:
            continue
        pieces += [text[kept:sep.end()], span[1]]
        kept = pos = span[0]
    if not pieces:
        return text
    pieces.append(text[kept:])
    return "".join(pieces)


def redact_body(body: bytes) -> bytes:
    """``body`` with every secret-looking field's value replaced; unchanged when it has none.
    A redacted JSON body is re-serialised (compact, UTF-8): it is for reading, not replaying."""
    try:
        data = jsonsafe.loads(body, parse_int=_int_or_text)
    except ValueError:
        text = body.decode("utf-8", "replace")
        redacted = redact_text(text)
        return body if redacted is text else redacted.encode("utf-8")
    scrubbed, changed = _scrub(data)
    if not changed:
        return body
    return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace")


MAX_REASON = 1000  # publish_dead keeps this much of a reason in its header


def safe_reason(reason: str) -> str:
    """A refusal reason fit for a TEXT column and an AMQP header: valid UTF-8, no control
    characters, at most ``MAX_REASON`` characters."""
    text = reason[:MAX_REASON + 1].encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."
