"""Bounded JSON from untrusted bytes (pvekvm/jsonsafe.py): the depth pre-scan agrees with the
real nesting, refusals carry a reason, and nothing a body does reaches a RecursionError or
super-linear work."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvekvm import jsonsafe
from tests.jsonfuzz import JSON, best_cpu_s


def _nesting(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    return 0


TEXT_WITH_BRACKETS = st.text(alphabet='[]{}"\\ab', max_size=12)


@settings(max_examples=120, deadline=None)
@given(st.recursive(st.one_of(JSON, TEXT_WITH_BRACKETS),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT_WITH_BRACKETS, inner, max_size=3), max_leaves=20))
def test_the_depth_scan_counts_what_the_decoder_nests(value: Any) -> None:
    """Brackets and escaped quotes inside strings (keys too) do not count."""
    text = json.dumps(value)
    assert jsonsafe.depth(text) == _nesting(value)
    if _nesting(value) <= jsonsafe.MAX_DEPTH:
        assert jsonsafe.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 30000 + b"]" * 30000, "nested 30000 levels deep (max 32)"),
    (b"[" * 33 + b"]" * 33, "nested 33 levels deep (max 32)"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested 40 levels deep"),
    (b"[" * 100000, "nested 100000 levels deep"),               # never closed
    (b'{"a": ', "Expecting value at line 1 column 7"),
    (b"\xff\xfe\xfd", "invalid UTF-8"),
])
def test_refusals_say_why(body: bytes, words: str) -> None:
    with pytest.raises(jsonsafe.JsonRefused) as err:
        jsonsafe.loads(body)
    assert words in err.value.reason


def test_size_is_refused_before_anything_is_read() -> None:
    with pytest.raises(jsonsafe.JsonRefused, match="too large: 70000 bytes"):
        jsonsafe.loads(b" " * 70000, max_bytes=65536)


def test_the_decoder_never_recurses_past_the_bound() -> None:
    """Under a recursion limit barely above the stack in use, a body at the bound decodes and a
    deep one is refused with its reason: no RecursionError whatever the nesting."""
    at_bound = "[" * jsonsafe.MAX_DEPTH + "]" * jsonsafe.MAX_DEPTH
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(_stack()) + jsonsafe.MAX_DEPTH + 40)
    try:
        assert jsonsafe.loads(at_bound) is not None
        for deep in ("[" * 10**5 + "]" * 10**5, '{"a":' * 10**5 + "0" + "}" * 10**5):
            with pytest.raises(jsonsafe.JsonRefused, match="levels deep"):
                jsonsafe.loads(deep)
    finally:
        sys.setrecursionlimit(old)


def _stack() -> list[Any]:
    import inspect
    return inspect.stack(0)


SHAPES = {  # adversarial for a string-skipping scan: unterminated strings, escapes, brackets
    "brackets": lambda n: "[" * n,
    "escaped quotes": lambda n: '"\\"' * (n // 3),
    "quotes": lambda n: '"' * n,
    "object chain": lambda n: '{"a":' * (n // 5),
    "trailing backslash": lambda n: '"' + "a" * n + "\\",
}



@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_depth_scan_grows_linearly(shape: str) -> None:
    """16 times the bytes costs well under 16 squared times the work (linear: ~16; the bound
    leaves room for a noisy machine, a quadratic scan would take ~256)."""
    small, large = SHAPES[shape](16 * 1024), SHAPES[shape](256 * 1024)
    assert best_cpu_s(jsonsafe.depth, large, 5) / best_cpu_s(jsonsafe.depth, small, 5) < 64
