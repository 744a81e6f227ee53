"""Hypothesis strategies for hostile input: arbitrary JSON, near-valid order events (a valid
event with one field broken, dropped or added) and step messages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**31, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "\ud800", "vps-small", "debian-12", "localhost", "1.2.3.4", "a" * 300,
                     "web1.example.com\n", "xn--zz9zz.example", "0", "1e400", "-1"]),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKji"
       "UqCnb/9du4XtqHnnEN/MOmtNtJRbITuiGybFGhGX fuzz@example")  # real: keys are parsed
VALID: dict[str, dict[str, Any]] = {
    "create": {"client_id": 5, "product": "vps-small", "email": "a@example.com",
               "hostname": "web1.example.com", "template": "debian-12", "ipv6": False},
    "change_package": {"product": "vps-large"},
    "reinstall": {"template": "ubuntu-2204", "ssh_keys": [KEY]},
    "suspend": {}, "unsuspend": {}, "terminate": {}, "reset_password": {},
    "iso_unmount": {},
    "snapshot_create": {"name": "nightly", "description": "before upgrade"},
    "snapshot_delete": {"name": "nightly"},
    "snapshot_rollback": {"name": "nightly"},
    "backup_create": {"note": "manual"},
    "backup_delete": {"backup_id": 1},
    "backup_restore": {"backup_id": 1},
    "backup_schedule": {"days": ["mon", "thu"]},
    "iso_mount": {"iso": "debian.iso"},
    "power": {"action": "reboot"},
    "language_change": {"language": "fa"},
    "reinstall_iso": {"iso": "debian.iso"}, "rescue_on": {}, "rescue_off": {},
}
EXTRA_KEYS = st.sampled_from(["password", "root_password", "api_key", "token", "vmid",
                              "node", "type", "version", "\ud800", "x" * 100])
RAW_NUMBERS = st.sampled_from([b"1e400", b"-1e400", b"9" * 5000, b"-" + b"1" * 4400,
                               b"NaN", b"Infinity", b"4294967296", b"18446744073709551616"])


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event (service 1-3, key from a small set so duplicates and conflicts happen)
    with at most two fields broken, dropped or added."""
    kind = draw(st.sampled_from(sorted(VALID)))
    event: dict[str, Any] = {"version": 1, "type": kind,
                             "idempotency_key": f"fuzz-{draw(st.integers(0, 5))}",
                             "service_id": draw(st.integers(1, 3)), **VALID[kind]}
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "add":
            event[draw(EXTRA_KEYS)] = draw(JSON)
            continue
        name = draw(st.sampled_from(sorted(event)))
        if action == "drop":
            event.pop(name)
        else:
            event[name] = draw(JSON)
    return event


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def with_raw_number(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """An event whose one field is a number literal json.dumps cannot write (1e400, 5000
    digits)."""
    event = draw(base)
    field = draw(st.sampled_from(sorted(event) or ["service_id"]))
    event[field] = "@RAW@"
    return _dumps(event).replace(b'"@RAW@"', draw(RAW_NUMBERS))


ORDER_BODIES = st.one_of(
    near_valid_events().map(_dumps),
    with_raw_number(near_valid_events()),
    JSON.map(_dumps),
    st.binary(max_size=64),
)


@st.composite
def step_dicts(draw: st.DrawFn) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": 1, "op": draw(st.integers(1, 10**6)),
                           "nudge": "2b1f7bd8-54a1-4cb1-a77e-6d2d1d6f3f7e", "state": "new"}
    for _ in range(draw(st.integers(0, 2))):
        msg[draw(st.sampled_from(["op", "nudge", "state", "v", "extra"]))] = draw(JSON)
    return msg


STEP_BODIES = st.one_of(step_dicts().map(_dumps), with_raw_number(step_dicts()),
                        JSON.map(_dumps), st.binary(max_size=64))


# --------------------------------------------------------------------------- hostile, with a secret
SECRET = "hunter2-Zq9"  # every HOSTILE_WITH_SECRET body holds it; no dead letter may
SECRET_NAMES = st.sampled_from(["password", "pwd", "pass", "rootpw", "Root-Password",
                                "api_key", "token", "client_secret", "db_pw", "passphrase"])
_ADVERSARIAL_PADDING = st.sampled_from([b"a-" * 8000, b"pw " * 5000, b'"\\"' * 5000,
                                        b"[" * 20000, b"{" * 20000, b"password" * 2000,
                                        b" " * 20000, b"", b"\xff\xfe" * 100])


def _secret_object(name: str, wrap: int) -> Any:
    value: Any = SECRET
    for _ in range(wrap):  # the secret inside arrays and objects under the secret's name
        value = [value] if wrap % 2 else {"x": value}
    return {name: value}


@st.composite
def hostile_with_secret(draw: st.DrawFn) -> bytes:
    """A body every intake must refuse (it has a secret-named field, never an event field),
    shaped to hurt: nested past any depth limit, cut short, padded with what made redaction
    quadratic, as key=value text, oversized; the secret is always in what is kept."""
    event = draw(near_valid_events())
    event.update(_secret_object(draw(SECRET_NAMES), draw(st.integers(0, 3))))
    keys = list(event)
    order = draw(st.permutations(keys))
    text = json.dumps({k: event[k] for k in order}, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass")
    shape = draw(st.sampled_from(["plain", "nested", "cut", "padded", "key=value",
                                  "oversized", "unbalanced"]))
    if shape == "nested":
        depth = draw(st.sampled_from([33, 100, 5000, 25000]))
        return b"[" * depth + text + b"]" * depth
    if shape == "cut":  # cut somewhere inside or after the secret's value
        at = text.index(SECRET.encode()) + len(SECRET) + draw(st.integers(0, 20))
        return text[:at]
    if shape == "padded":
        return draw(_ADVERSARIAL_PADDING) + text + draw(_ADVERSARIAL_PADDING)
    if shape == "key=value":
        return (draw(_ADVERSARIAL_PADDING) + f"&{draw(SECRET_NAMES)}={SECRET}&x=1".encode())
    if shape == "oversized":
        return text + b" " * (64 * 1024)
    if shape == "unbalanced":
        return text + b"]" * draw(st.integers(1, 30000))
    return text


HOSTILE_WITH_SECRET = hostile_with_secret()


def best_cpu_s(fn: Callable[[Any], Any], arg: Any, tries: int = 3) -> float:
    """The least CPU time ``fn(arg)`` took over ``tries`` runs (at least 0.1 ms): for growth
    ratios between input sizes, never for absolute limits."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.process_time()
        fn(arg)
        best = min(best, time.process_time() - t0)
    return max(best, 1e-4)
