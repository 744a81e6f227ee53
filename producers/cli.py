"""``python -m producers``: place an order from the shell.

    python -m producers create --service-id 5546 --client-id 17 --product vps-s \\
        --email client@example.com --hostname web1.example.com --dry-run
    python -m producers backup_schedule --service-id 5546 --days mon thu
    python -m producers backup_schedule --service-id 5546 --days          # automatic backups off
    python -m producers raw replay.json          # publish a body as-is (``-`` = stdin)
    python -m producers watch                    # what billing hears (producers/watch.py)

One subcommand per event type, one ``--option`` per field (``client_id`` → ``--client-id``).
``--amqp-url`` and ``--namespace`` default to the settings every pvekvm program reads
(``$AMQP_URL`` / ``$PVEKVM_NAMESPACE``, else ``[amqp]`` of ``--config``, ``$PVEKVM_CONFIG`` or
config/pvekvm.toml); ``--dry-run`` prints the JSON instead of publishing. Without
``--idempotency-key`` a repeatable action (``REPEATABLE_TYPES``: suspend, power, snapshots, …)
gets a fresh key, create, terminate and backup_schedule one derived from their fields. On
success the event JSON (dry run) or ``published <routing key> message_id=<key>`` is printed on
stdout.

``raw`` does no validation on purpose (operators replaying dead letters; intake validates): the
routing key defaults to ``order.<type>`` when the body is a JSON object with a string ``type``,
else ``order.raw``; the message id to its string ``idempotency_key``, else a hash of the body.

Exit codes: 0 ok, 1 publishing failed (broker: one line naming the setting and the fix),
2 invalid input or settings (reason on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from producers.api import OrderClient, utc_now
from producers.events import (
    ENVELOPE_FIELDS,
    EVENT_TYPES,
    WEEKDAYS,
    InvalidEvent,
    producer_key,
)
from pvekvm.config import ConfigError, broker_settings
from pvekvm.preflight import broker_verdict

EXIT_OK, EXIT_PUBLISH_FAILED, EXIT_INVALID = 0, 1, 2


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS so the options work before or after the subcommand without one overriding the
    # other; defaults are resolved in main().
    parser.add_argument("--amqp-url", default=argparse.SUPPRESS,
                        help="broker URL (default: $AMQP_URL, else [amqp] url of the settings)")
    parser.add_argument("--namespace", default=argparse.SUPPRESS,
                        help="topology namespace (default: $PVEKVM_NAMESPACE, else [amqp] "
                        "namespace of the settings, else pvekvm)")
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="settings file (default: $PVEKVM_CONFIG or config/pvekvm.toml)")
    parser.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                        help="print the message instead of publishing it")


def _argument(name: str, annotation: Any, required: bool) -> dict[str, Any]:
    """The argparse option of an event field, read from its declared type."""
    kind = annotation
    if isinstance(annotation, UnionType) or get_origin(annotation) is Union:  # X | None
        kind = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(kind) is Annotated:  # a type with its own checks (ssh_keys, rules, days)
        kind = get_args(kind)[0]
    if kind is bool:
        return {"dest": name, "action": "store_true"}
    if get_origin(kind) is tuple and name == "days":  # the backup days
        return {"dest": name, "nargs": "*", "required": required, "metavar": "DAY",
                "help": f"zero or more of {' '.join(WEEKDAYS)}; none = off"}
    if get_origin(kind) is tuple and get_args(kind)[0] is str:  # one value per line (keys)
        return {"dest": name, "action": "append", "required": required, "metavar": "LINE",
                "help": "repeat for each one"}
    if get_origin(kind) is tuple:  # a list of objects (firewall rules): as JSON
        return {"dest": name, "type": json.loads, "required": required, "metavar": "JSON",
                "help": "a JSON list"}
    if kind is int:
        return {"dest": name, "type": int, "required": required}
    if get_origin(kind) is Literal:
        return {"dest": name, "required": required, "choices": get_args(kind)}
    return {"dest": name, "required": required}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers",
                                     description="Publish pvekvm order events.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="TYPE")
    for event_type, cls in EVENT_TYPES.items():
        p = sub.add_parser(event_type, help=f"publish an '{event_type}' order")
        _common(p)
        p.add_argument("--service-id", type=int, required=True)
        p.add_argument("--idempotency-key",
                       help="default: fresh per call for repeatable actions "
                            "(suspend, power, snapshots, ...), else derived from the fields")
        p.add_argument("--occurred-at", help="ISO-8601 with offset (default: now, UTC)")
        for name, f in cls.model_fields.items():
            if name in ENVELOPE_FIELDS:
                continue
            p.add_argument(_option(name), **_argument(name, f.annotation, f.is_required()))
    # dispatched before this parser by producers/__main__.py; listed so --help shows it
    sub.add_parser("watch", add_help=False,
                   help="print what billing hears on <namespace>.events, each event once "
                        "(python -m producers watch --help)")
    raw = sub.add_parser("raw", help="publish a body as-is, without validation")
    _common(raw)
    raw.add_argument("file", help="file with the message body, '-' for stdin")
    raw.add_argument("--routing-key", help="default: order.<type> from the body, else order.raw")
    raw.add_argument("--message-id", help="default: the body's idempotency_key, else its hash")
    return parser


def _raw_defaults(body: bytes) -> tuple[str, str]:
    routing_key, message_id = "order.raw", "raw:" + hashlib.sha256(body).hexdigest()[:40]
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return routing_key, message_id
    if isinstance(data, dict):
        if isinstance(data.get("type"), str) and re.fullmatch(r"[a-z0-9_]{1,64}", data["type"]):
            routing_key = f"order.{data['type']}"
        key = data.get("idempotency_key")
        if isinstance(key, str) and 0 < len(key) <= 255:
            message_id = key
    return routing_key, message_id


def _fail(code: int, message: str) -> int:
    print(message, file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dry_run = getattr(args, "dry_run", False)
    try:
        amqp_url, where, namespace = broker_args(args, needed=not dry_run)
        if args.command == "raw":
            body = _read_body(args.file)
            default_key, default_id = _raw_defaults(body)
            routing_key = args.routing_key or default_key
            message_id = args.message_id or default_id
        else:
            cls = EVENT_TYPES[args.command]
            values = {name: getattr(args, name) for name in cls.model_fields
                      if name not in ("version", "type", "occurred_at")}
            values["idempotency_key"] = producer_key(args.command, values["service_id"],
                                                     values["idempotency_key"])
            event = cls(occurred_at=args.occurred_at or utc_now(), **values)
            body, routing_key, message_id = (event.to_json(), event.routing_key,
                                             event.idempotency_key)
    except ConfigError as exc:
        return _fail(EXIT_INVALID, f"configuration error: {exc}")
    except InvalidEvent as exc:
        return _fail(EXIT_INVALID, f"invalid order: {exc.reason}")
    except OSError as exc:
        return _fail(EXIT_INVALID, f"cannot read {args.file}: {exc.strerror or exc}")

    if dry_run:
        sys.stdout.buffer.write(body + b"\n")
        sys.stdout.flush()
        return EXIT_OK
    try:
        with OrderClient(amqp_url, namespace) as client:
            client.publish_raw(body, routing_key, message_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure: report it, exit 1
        verdict, _ = broker_verdict(amqp_url, where)
        if verdict.failed:
            return _fail(EXIT_PUBLISH_FAILED, f"publish failed: {verdict.detail}")
        return _fail(EXIT_PUBLISH_FAILED,
                     f"publish failed: {type(exc).__name__}: {str(exc) or repr(exc)}")
    print(f"published {routing_key} message_id={message_id}")
    return EXIT_OK


def broker_args(args: argparse.Namespace, needed: bool) -> tuple[str, str, str]:
    """(AMQP URL, where it is set, namespace): options first, then the shared settings (a URL
    is ``needed`` unless this is a dry run)."""
    url, ns, where = getattr(args, "amqp_url", None), getattr(args, "namespace", None), ""
    if url:
        where = "--amqp-url"
    if not url or not ns:
        try:
            s_url, s_where, s_ns = broker_settings(getattr(args, "config", None))
        except ConfigError:
            if needed and not url:
                raise
            s_url, s_where, s_ns = "", "", os.environ.get("PVEKVM_NAMESPACE") or "pvekvm"
        if not url:
            url, where = s_url, s_where
        ns = ns or s_ns
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", ns):
        raise InvalidEvent(f"namespace: not a valid namespace: {ns!r}")
    return url, where, ns


def _read_body(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as fh:
        return fh.read()


__all__ = ["build_parser", "main"]
