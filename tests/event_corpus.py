"""A corpus of bad order events, each broken in one (or several) ways: every field of every
type with each kind of wrong value, the envelope's and JSON's own failures, and events with
several faults at once (which one a reason names is part of the contract).

``tests/data/event_refusals.json`` holds, per body (by its SHA-256), the reason the engine gave
it when the corpus was captured, or the event it accepted (``python -m tests.event_corpus >
tests/data/event_refusals.json``, run once, on the validator of commit ec46505, before the event
schema was declared once);
tests/test_event_refusals.py holds today's validator to the same reasons."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

VALID: dict[str, dict[str, Any]] = {
    "create": {"client_id": 17, "product": "vps-s", "email": "client@example.com",
               "hostname": "web1.example.com", "template": "debian-12", "ipv6": True,
               "language": "de"},
    "change_package": {"product": "vps-m"},
    "reinstall": {"template": "ubuntu-24.04"},
    "suspend": {}, "unsuspend": {}, "terminate": {}, "reset_password": {}, "iso_unmount": {},
    "snapshot_create": {"name": "before_upgrade", "description": "before apt upgrade"},
    "snapshot_delete": {"name": "before_upgrade", "description": "old"},
    "snapshot_rollback": {"name": "before_upgrade", "description": "x"},
    "backup_create": {"note": "manual"},
    "backup_delete": {"backup_id": 9},
    "backup_restore": {"backup_id": 9},
    "backup_schedule": {"days": ["mon", "thu"]},
    "iso_mount": {"iso": "Debian-12.5.0-amd64-netinst.iso"},
    "power": {"action": "reboot"},
    "rdns_set": {"address": "192.0.2.10", "hostname": "mail.client.example"},
    "rdns_reset": {"address": "2001:db8::10"},
    "migrate": {"node": "pve2"},
    "language_change": {"language": "de"},
    "reinstall_iso": {"iso": "Debian-12.5.0-amd64-netinst.iso"},
    "rescue_on": {}, "rescue_off": {},
    "firewall_rules_set": {"rules": [{"direction": "out", "action": "DROP", "proto": "udp",
                                      "dport": "53"}]},
    "hostname_change": {"hostname": "web2.example.com"},
}
ENVELOPE: dict[str, Any] = {"version": 1, "idempotency_key": "whmcs:call-1", "service_id": 5546,
                            "occurred_at": "2026-04-10T03:49:18+00:00"}

# wrong values every field gets, whatever its kind
ANY_WRONG: list[Any] = [None, True, False, 0, -1, 1.5, 2**32, 10**30, "", "x", "17", [], ["a"],
                        {}, {"a": 1}, "a" * 300, "\u0000", "tab\there"]
# more, per field: values of the right JSON type that break the field's own rule
BY_FIELD: dict[str, list[Any]] = {
    "service_id": [2**32 - 1, 2**32, 4294967296, 9007199254740993],
    "client_id": [2**32 - 1, 2**32],
    "backup_id": [2**63, 2**63 - 1],
    "idempotency_key": ["a b", "ключ", "a" * 129, "a" * 128, "k\n", "k/1"],
    "occurred_at": ["yesterday", "2026-04-10T03:49:18", "2026-13-10T03:49:18+00:00",
                    "2026-04-10T03:49:18Z", "2026-04-10 03:49:18+00:00", "9" * 70],
    "product": ["VPS", "-vps", "vps s", "a" * 64, "a" * 65, "vps\n", "ü"],
    "template": ["Debian", "deb/ian", "a" * 65],
    "email": ["a@b", "@example.com", "a@", "a b@example.com", "a@exa mple.com",
              "a@example.com.", "a" * 65 + "@example.com", "a@" + "b" * 255 + ".com",
              "a@localhost", "a@@example.com", "a@-x.example.com"],
    "hostname": ["localhost", "a.localhost", "1.2.3.4", "2001:db8::1", "web1.123", "a..b",
                 "-a.example.com", "a-.example.com", "xn--zz.example", "ab--c.example",
                 "bücher.example", "web1.example.com\n", "web1.example.com.", "a" * 64 + ".com",
                 ("a" * 63 + ".") * 4 + "com", "WEB1.Example.COM", "web_1.example.com",
                 "xn--n3h.example", "*.example.com", "a" * 254, " web1.example.com"],
    "ipv6": ["true", 1],
    "language": ["klingon", "xx-YY-ZZ-WW-VV", "de\n", "a" * 40, "german", "pt_br", "zz"],
    "name": ["current", "pending", "PENDING", "Pending", "1abc", "a", "a" * 41, "a" * 40,
             "ab cd", "ab.cd", "vzdump"],
    "description": ["a" * 10000, "line\nbreak", "\x7f", "ok \u00e9"],
    "note": ["a" * 10000, "\x1b[31m"],
    "days": ["mon", ["mon", "mon"], ["fun"], [1], ["Mon"], [None], ["mon", "tue", "wed", "thu",
             "fri", "sat", "sun", "mon"], [[]], ["sun", "mon"]],
    "iso": ["../etc/passwd.iso", "x.img", ".iso", "a" * 210 + ".iso", "a b.iso", "x.ISO"],
    "action": ["dance", "START", "reset", "suspend"],
    "address": ["300.1.1.1", "192.0.2", "2001:db8::g", "192.0.2.10/24", "fe80::1%eth0",
                "::ffff:1.2.3.4", " 192.0.2.10", "0" * 50],
}


def _dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def bodies() -> list[str]:
    """Every body of the corpus (as JSON text, UTF-8 when sent)."""
    out: list[str] = []
    for etype, fields in VALID.items():
        whole = {**ENVELOPE, "type": etype, **fields}
        for name in whole:
            if name == "type":
                continue
            out.append(_dump({k: v for k, v in whole.items() if k != name}))  # missing
            for value in ANY_WRONG + BY_FIELD.get(name, []):
                out.append(_dump({**whole, name: value}))
        out.append(_dump({**whole, "unknown": 1}))
        out.append(_dump({**whole, "Service_ID": 1}))
        out.append(_dump({**whole, "a" * 100: 1}))
        out.append(_dump({**whole, "\u0000\n": 1}))
    create = {**ENVELOPE, "type": "create", **VALID["create"]}
    several = [
        {**create, "service_id": "x", "product": "BAD"},
        {**create, "product": "BAD", "service_id": "x"},
        {**create, "email": "bad", "client_id": None},
        {k: v for k, v in {**create, "hostname": "localhost"}.items() if k != "email"},
        {**create, "extra": 1, "product": None},
        {**create, "extra": 1, "service_id": -5},
        {k: v for k, v in {**create, "extra": 1}.items() if k != "client_id"},
        {**create, "occurred_at": "bad", "idempotency_key": "a b"},
        {**create, "version": 2, "type": "nope"},
        {**create, "type": "nope", "extra": 1},
        {**create, "idempotency_key": None, "service_id": None},
        {**create, "template": None, "language": "klingon", "ipv6": None},
        {**create, "type": "snapshot_create", "name": "x"},
        {**ENVELOPE, "type": "power", "action": "x", "hostname": "a"},
        {**ENVELOPE, "type": "backup_schedule"},
        {**ENVELOPE, "type": "backup_schedule", "days": None},
        {**ENVELOPE, "type": "rdns_set", "address": "bad", "hostname": "localhost"},
    ]
    out += [_dump(e) for e in several]
    for value in [2, 0, "1", 1.0, True, None, [1], -1, 10**20]:
        out.append(_dump({**create, "version": value}))
    out.append(_dump({k: v for k, v in create.items() if k != "version"}))
    out.append(_dump({k: v for k, v in create.items() if k != "type"}))
    for value in [None, 5, "", "Create", "create ", ["create"], {"t": 1}, "x" * 500, True]:
        out.append(_dump({**create, "type": value}))
    out += ["", " ", "null", "1", '"create"', "[]", "[1,2]", "true", "{", "}", "{]",
            '{"version": 1,}', "{'version': 1}", '{"version": NaN}', '{"version": Infinity}',
            '{"version": -Infinity}', '{"version": 1e400}', '{"service_id": ' + "9" * 5000 + "}",
            '{"version": 1, "type": "suspend", "idempotency_key": "k", "service_id": '
            + "1" * 30 + "}",
            '{"version": 1, "version": 1}',
            '{"version": 1, "type": "suspend", "type": "terminate", "idempotency_key": "k", '
            '"service_id": 1}',
            '{"version": 1, "type": "suspend", "idempotency_key": "k", "service_id": 1, '
            '"service_id": 2}',
            "[" * 33 + "]" * 33, "[" * 32 + "]" * 32, '{"a":' * 40 + "1" + "}" * 40,
            '{"version": 1, "type": "suspend", "idempotency_key": "\\ud800", "service_id": 1}',
            '{"version": 1, "type": "snapshot_create", "idempotency_key": "k", "service_id": 1,'
            ' "name": "snap", "description": "\\udfff"}',
            '{"version": 1, "type": "suspend", "idempotency_key": "k", "service_id": 1} x',
            '{"version": 1, "type": "suspend", "idempotency_key": "k", "service_id": 1}\n',
            "\ufeff{}"]
    out.append(_dump({**create, "padding": "x" * 70000}))
    return list(dict.fromkeys(out))


RAW_BYTES: list[bytes] = [b"\xff\xfe{", b'{"version": 1, "type": "\xc3"}', b"\x00" * 10,
                          '{"version": 1}'.encode("utf-16"), b"x" * (64 * 1024 + 1)]


def verdict(raw: bytes) -> dict[str, Any]:
    """What the validator of the day says of ``raw``: its reason, or the event it accepted
    (normalised, as serialised)."""
    from producers.events import InvalidEvent, parse_event

    try:
        return {"reason": None, "accepted": parse_event(raw).to_dict()}
    except InvalidEvent as exc:
        return {"reason": exc.reason}


def corpus() -> list[bytes]:
    """Every body as sent: text bodies as UTF-8 (lone surrogates kept as such), then raw bytes."""
    return [text.encode("utf-8", "surrogatepass") for text in bodies()] + RAW_BYTES


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def capture() -> dict[str, Any]:
    return {raw_digest: verdict(raw) for raw_digest, raw in
            ((digest(raw), raw) for raw in corpus())}


if __name__ == "__main__":  # one line per body, for a readable diff
    rows = capture()
    sys.stdout.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                                        for k, v in rows.items()) + "\n}\n")
