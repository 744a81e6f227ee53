"""Operator commands: ``python -m pvekvm <command>``.

  init-db                  create the database if missing, apply schema.sql and migrations,
                           create the secret key file if missing and no data needs a key
  init-key [--force]       create the secret key file ([secrets] key_file) if missing
  rotate-keys [--keep-key|--add|--promote] [--drop-old] [--batch N]
                           prepend a new key, re-encrypt every stored secret under it, and
                           (--drop-old) remove the old keys once no value needs them;
                           several hosts: --add, copy the file, --promote, copy, --drop-old
  grants [--prefix P] [--host H] [--vhost V]
                           print the commands creating least-privilege RabbitMQ and MariaDB
                           users (fresh passwords), see pvekvm.grants
  check                    one line per dependency (RabbitMQ, MariaDB, Proxmox, DNS, SMTP)
  config-check FILE        validate a settings or catalog file (names file, key, problem)
  load-catalog FILE        load templates, IP pools, products, DNS zones (TOML)
  history SERVICE_ID       print the service's operations as the manual's --- Deploy --- blocks
                           (exit 1: no such service)
  resume SID|op:N          restart a paused operation from the state it waits at
  resume --all | --reason TEXT   every paused operation / those whose reason contains TEXT
  cancel SID|op:N          abandon a paused operation (service freed, VM state printed)
  cancel --all | --reason TEXT   likewise in bulk (paused operations resume by themselves
                           on a backoff: see README "What resumes by itself"); resume and
                           cancel exit 1 when nothing was paused
  dead-letters [--limit N] [--full]  refused messages: reason, then the body as JSON
                           (redacted; cut at 300 characters unless --full)
  machines [KIND]          each machine's table: state, label, step function, pool, next
                           state and the retry policy every transition resolves to under
                           these settings (the five layers of retrying: pvekvm/lifecycle.py)
  status                   operations by kind and status, services by status, queue depths,
                           nodes in maintenance and drain counts
  migrate SID [--node N]   move the service's VM (live when it can) to N, or where placement
                           chooses; billing hears service.migrated
  node maintenance NODE on|off   no new VM on NODE (deploys go elsewhere) / back in service
  node drain NODE [--no-watch] [--timeout S]   maintenance on and every VM of ours moved off,
                           a bounded number at a time, with a progress bar (exit 1: VMs left)
  node undrain NODE        back in service (moves under way finish)
  node status [NODE]       maintenance, draining and the drain's counts
  pools                    IP pools: addresses free / held
  isos STORAGE [--node N]  ISO images on a storage, grouped as the client area shows them
  adopt --vmid N --service-id S --client-id C --product P [--node N] [--hostname H]
        [--email E] [--template T]   link a VM made outside pvekvm to a billing service
  adopt --from FILE        the same for every line of a CSV/JSON mapping (exit 1: any refused)
  drift [SID] [--fix]      each VM's config against its package and records (exit 1: any
                           differs); --fix applies the package (change_package)
  api [--host H] [--port P] [--workers N]   the HTTP service API (see pvekvm.apps.api)
  smtp-sink [--dir D]      a mail sink where [smtp] points, for a trial (keeps each message
                           in var/mail/NNNN.eml; nothing is delivered)
  api new-token            a billing token and its [api.tokens] line (api hash-token TOKEN:
                           the line of an existing one)
  webhooks [--json]        each webhook endpoint: backlog, failing and parked services
  webhooks retry NAME [--service SID]   send a parked stream again (all of NAME's, or one)
  webhooks new-secret      a fresh whsec_ secret for [[webhooks]] secrets
  console-proxy [--host H] [--port P]      the browser console's proxy (pvekvm.console.proxy)

Settings: --config FILE, else $PVEKVM_CONFIG, else config/pvekvm.toml, overridden by the
environment (see pvekvm.config). Exit codes: 0 ok, 1 a check or command failed, 2 a setting or
file is wrong, 3 a dependency does not answer (one line says which and the fix).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pvekvm import catalog, messaging, preflight
from pvekvm.config import ConfigError, Settings, load_settings, shown
from pvekvm.db import bind
from pvekvm.lifecycle import OpStatus

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

PROG = "python -m pvekvm"
EXIT_FAILED = 1

#: what each command needs before it runs (checked at start, see pvekvm.preflight)
NEEDS: dict[str, tuple[str, ...]] = {
    "load-catalog": ("database-exists", "secret-key"),  # it brings the schema up to date
    "history": ("database",),
    "resume": ("database", "broker"),
    "cancel": ("database", "broker"),
    "dead-letters": ("database",),
    "pools": ("database",),
    "status": ("database", "broker"),
    "migrate": ("database", "broker"),
    "node": ("database", "broker"),
    "isos": ("proxmox",),
    # the service API is built to run on and answer 503 while the database or broker is down
    # (tests/api); its settings are still validated at start
    "api": ("secret-key",),
    # the console proxy reads console tokens and services, and calls vncproxy (issue 27)
    "console-proxy": ("database", "proxmox"),
    "rotate-keys": ("database", "secret-key"),
    "init-key": ("database-exists",),
    "grants": ("database",),
    "smtp-sink": (),
    "machines": (),
    "webhooks": ("database",),
    "adopt": ("database", "proxmox", "secret-key"),
    "drift": ("database", "proxmox"),
}


def cmd_init_db(settings: Settings) -> int:
    """Create the database when missing, then bring its schema to the latest version."""
    import pymysql

    from pvekvm.db import (
        DatabaseSetupError,
        apply_schema,
        create_database,
        database_name,
        schema_version,
    )

    name = database_name(settings.database_url)
    try:
        created = create_database(settings.database_url)
        db = bind(settings.database_url)
        before = schema_version(db)
        version = apply_schema(db)
    except DatabaseSetupError as exc:
        print(f"{PROG} init-db: {exc}", file=sys.stderr)
        return preflight.EXIT_DEPENDENCY
    except pymysql.err.MySQLError:
        verdict = preflight.check_database(settings, schema=False)
        print(f"{PROG} init-db: {verdict.detail}", file=sys.stderr)
        return preflight.EXIT_DEPENDENCY
    state = "created" if created else "exists"
    key = preflight.check_secret_key(settings)
    if key.failed:
        print(f"{PROG} init-db: {key.detail}", file=sys.stderr)
        return preflight.EXIT_DEPENDENCY
    print(f"secret key {key.detail}")
    if before == version:
        print(f"database `{name}` {state}; schema version {version} (up to date)")
    else:
        print(f"database `{name}` {state}; schema version {before or 'none'} -> {version}")
    return 0


def cmd_check(settings: Settings) -> int:
    """Every dependency, one line each; exit 1 when any fails."""
    verdicts = [preflight.check_database(settings)]
    verdicts += preflight.check_broker(settings)
    verdicts += preflight.check_proxmox(settings)
    if verdicts[0].failed:
        verdicts.append(preflight.Verdict("DNS", "skip", "needs the database (catalog)"))
    else:
        bind(settings.database_url)
        verdicts += preflight.check_dns(settings)
    verdicts.append(preflight.check_smtp(settings))
    for v in verdicts:
        print(v.line())
    failed = [v for v in verdicts if v.failed]
    print(f"{len(failed)} failed" if failed else "all dependencies answer")
    return EXIT_FAILED if failed else 0


CATALOG_SECTIONS = {"templates", "ip_pools", "products", "dns_providers", "dns_zones"}


def cmd_config_check(path: str) -> int:
    """A settings file (as the entry points would read it, environment included) or a catalog
    file; every problem on its own line, exit 2 when there is one."""
    from pvekvm.catalog_check import validate_file

    f = Path(path)
    try:
        data = tomllib.loads(f.read_text())
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return preflight.EXIT_CONFIG
    except tomllib.TOMLDecodeError as exc:
        print(f"{path}: not valid TOML: {exc}", file=sys.stderr)
        return preflight.EXIT_CONFIG
    if set(data) & CATALOG_SECTIONS:
        errors = validate_file(f)
        for e in errors:
            print(e, file=sys.stderr)
        if errors:
            return preflight.EXIT_CONFIG
        counts = ", ".join(f"{len(data.get(k, []))} {k}" for k in sorted(CATALOG_SECTIONS))
        print(f"{path}: catalog ok ({counts})")
        return 0
    try:
        s = load_settings(f)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return preflight.EXIT_CONFIG
    o = s.origin
    if "api_note" in o:
        print(f"note: {o['api_note']}", file=sys.stderr)
    pve = o["proxmox"] if s.proxmox else f"none ({o['proxmox']})"
    clusters = (f"; clusters: {', '.join(s.cluster_names)}" if len(s.all_clusters) > 1
                else "")
    print(f"{shown(f)}: settings ok (database: {o['database']}; broker: {o['amqp']}; "
          f"proxmox: {pve}{clusters}; smtp: {o['smtp']})")
    if any(c.placement is not None for c in s.all_clusters):  # some count room their own way
        print("placement: " + "; ".join(
            f"{c.name} {preflight.ratios(s.placement_of(c.name))}" for c in s.all_clusters))
    return 0


def cmd_load_catalog(settings: Settings, args: argparse.Namespace) -> int:
    from pvekvm.catalog_check import validate_file
    from pvekvm.db import DatabaseSetupError, apply_schema
    from pvekvm.models import database

    errors = validate_file(args.file)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return preflight.EXIT_CONFIG
    try:
        apply_schema(database.obj)
    except DatabaseSetupError as exc:
        print(f"{PROG} load-catalog: {exc}", file=sys.stderr)
        return preflight.EXIT_DEPENDENCY
    try:
        counts = catalog.load_file(args.file, settings.secret_key_file, settings.cluster_names)
    except catalog.CatalogError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return preflight.EXIT_CONFIG
    print(f"{args.file}: loaded " + ", ".join(f"{n} {what.replace('_', ' ')}"
                                              for what, n in counts.items()))
    return 0


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """Newest first: when, where, why, then the body as JSON (redacted; cut at --width
    characters unless --full)."""
    from pvekvm.models import DeadLetter

    rows = list(DeadLetter.select().order_by(DeadLetter.id.desc()).limit(args.limit))
    for r in rows:
        print(f"#{r.id} {r.created_at:%Y-%m-%d %H:%M:%S}  {r.source}  {r.reason}")
        print(f"    {readable_body(bytes(r.body), None if args.full else args.width)}")
    print(f"{len(rows)} dead letter(s) shown" + ("" if rows else ": nothing was refused"))
    return 0


def readable_body(body: bytes, width: int | None) -> str:
    """A parked body for a person: decoded JSON on one line (keys sorted, non-ASCII kept), else
    the text with control characters escaped; secrets redacted once more (pvekvm/redact.py)."""
    import json

    from pvekvm import jsonsafe
    from pvekvm.redact import redact_body

    clean = redact_body(body)
    try:
        text = json.dumps(jsonsafe.loads(clean), ensure_ascii=False, sort_keys=True)
    except ValueError:  # not JSON (or too deep): its text, escaped
        text = clean.decode("utf-8", "backslashreplace")
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if width is not None and len(text) > width:
        return f"{text[:width]}… ({len(body)} bytes; --full shows all)"
    return text


def cmd_init_key(settings: Settings, args: argparse.Namespace) -> int:
    """Create the key file; refused (exit 1) while the database holds encrypted values,
    unless --force: they would stay encrypted under a key this file does not have."""
    from pvekvm import keyrotate, secrets
    from pvekvm.models import database

    path = settings.secret_key_file
    if Path(path).exists():
        print(f"{path}: exists ({len(secrets.read_keys(path))} keys); left as it is")
        return 0
    held = keyrotate.encrypted_values(database.obj)
    if held and not args.force:
        print(f"{PROG} init-key: the database holds {held} encrypted values: a new key at "
              f"{path} could not read them; point [secrets] key_file at their key file "
              "(--force creates one anyway)", file=sys.stderr)
        return EXIT_FAILED
    secrets.create_key(path)
    print(f"{path}: created")
    return 0


def cmd_rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    from pvekvm import keyrotate
    from pvekvm.models import database

    if args.add:
        n = keyrotate.add_key(settings.secret_key_file)
        print(f"{settings.secret_key_file}: {n} keys, the new one last (read, not yet used): "
              "copy this file to every host, then run rotate-keys --promote")
        return 0
    report = keyrotate.rotate(database.obj, settings.secret_key_file, new_key=not args.keep_key,
                              promote=args.promote, drop_old=args.drop_old, batch=args.batch)
    print(f"{settings.secret_key_file}: {report.summary()}")
    return EXIT_FAILED if report.unreadable else 0


def cmd_grants(settings: Settings, args: argparse.Namespace) -> int:
    """Print (not run) the rabbitmqctl commands and SQL of the least-privilege users."""
    import shlex
    from urllib.parse import unquote, urlparse

    from pvekvm import grants, secrets
    from pvekvm.db import database_name
    from pvekvm.models import database

    name = database_name(settings.database_url)
    vhost = args.vhost or unquote(urlparse(settings.amqp_url.split(",")[0]).path[1:]) or "/"
    amqp = {r: (f"{args.prefix}_{r}", secrets.generate_password(24))
            for r in ("billing", "api", "engine")}
    sql = {r: (f"{args.prefix}_{r}", secrets.generate_password(24))
           for r in ("admin", "worker", "api")}
    print(f"# RabbitMQ, vhost {vhost}, namespace {settings.namespace}")
    for argv in grants.rabbitmq_commands(vhost, settings.namespace, amqp):
        print(shlex.join(argv))
    print(f"# MariaDB, database {name} (as an administrator)")
    tables = grants.existing_tables(database.obj, name)
    for stmt in grants.mariadb_statements(name, sql, args.host, tables):
        print(stmt + ("" if stmt.startswith("--") else ";"))
    return 0


def _admin() -> ModuleType:
    from workers import admin

    return admin


def _drain() -> ModuleType:
    from workers import drain

    return drain


def _cluster_arg(settings: Settings, args: argparse.Namespace) -> str | None:
    """``--cluster C`` checked against the settings (exit 2 naming the known ones)."""
    name = getattr(args, "cluster", None)
    if name is not None and settings.cluster(name) is None:
        print(f"{PROG}: --cluster {name}: not a cluster of the settings (known: "
              f"{', '.join(settings.cluster_names)})", file=sys.stderr)
        raise SystemExit(preflight.EXIT_CONFIG)
    return name


def _node_command(settings: Settings, args: argparse.Namespace) -> int:
    d = _drain()
    cluster = _cluster_arg(settings, args) or settings.default_cluster
    if args.node_cmd == "maintenance":
        return _reply(d.set_maintenance(args.node, args.state == "on", cluster))
    if args.node_cmd == "drain":
        return _reply(d.drain_command(settings, args.node, not args.no_watch, args.timeout,
                                      cluster=cluster))
    if args.node_cmd == "undrain":
        return _reply(d.undrain(args.node, cluster))
    return _reply(d.node_status(args.node, _cluster_arg(settings, args)
                                or (settings.default_cluster if args.node else None)))


def _node_name(text: str) -> str:
    from pvekvm.wire.orders import InvalidEvent, MigrateEvent

    try:
        return str(MigrateEvent.model_validate(
            {"service_id": 1, "idempotency_key": "cli", "node": text}).node)
    except (InvalidEvent, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _smtp_sink(settings: Settings, args: argparse.Namespace) -> int:
    from pvekvm import smtpsink

    return smtpsink.serve(settings.smtp, Path(args.dir))


def _reply(text: str) -> int:
    """Print an operator action's reply; exit 1 when it found nothing to act on."""
    print(text)
    return EXIT_FAILED if isinstance(text, _admin().NothingDone) else 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int | None]] = {
    "load-catalog": cmd_load_catalog,
    "init-key": cmd_init_key,
    "rotate-keys": cmd_rotate_keys,
    "grants": cmd_grants,
    "history": lambda settings, args: _reply(_admin().history(args.service_id)),
    "resume": lambda settings, args: _reply(
        _admin().resume(settings, args.ref) if args.ref is not None
        else _admin().resume_many(settings, args.reason, _cluster_arg(settings, args))),
    "cancel": lambda settings, args: _reply(
        _admin().cancel(settings, args.ref) if args.ref is not None
        else _admin().cancel_many(settings, args.reason,
                                  cluster=_cluster_arg(settings, args))),
    "dead-letters": cmd_dead_letters,
    "pools": lambda settings, args: print(pool_usage()),
    "status": lambda settings, args: print(engine_status(settings)),
    "machines": lambda settings, args: cmd_machines(settings, args.kind),
    "migrate": lambda settings, args: _reply(_drain().migrate_command(
        settings, args.service_id, args.node)),
    "node": lambda settings, args: _node_command(settings, args),
    "isos": lambda settings, args: print(list_isos(settings, args.storage, args.node,
                                                   _cluster_arg(settings, args))),
    "api": lambda settings, args: args.run(args, settings),
    "smtp-sink": lambda settings, args: _smtp_sink(settings, args),
    "webhooks": lambda settings, args: cmd_webhooks(args),
    "console-proxy": lambda settings, args: args.run(settings, args),
    "adopt": lambda settings, args: _adoption().cmd_adopt(settings, args),
    "drift": lambda settings, args: _adoption().cmd_drift(settings, args),
}


def cmd_webhooks(args: argparse.Namespace) -> int:
    from workers import webhooks

    return webhooks.command(args.action, args.name, args.service, args.json)


def _adoption() -> ModuleType:
    from workers import adopt_cli

    return adopt_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="settings file (default: $PVEKVM_CONFIG or "
                    "config/pvekvm.toml)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init-db")
    p = sub.add_parser("init-key")
    p.add_argument("--force", action="store_true",
                   help="create a key even though the database holds encrypted values")
    p = sub.add_parser("rotate-keys")
    p.add_argument("--keep-key", action="store_true",
                   help="no new key: finish an interrupted rotation under the newest key")
    p.add_argument("--add", action="store_true",
                   help="only append a new key (several hosts: copy the file before --promote)")
    p.add_argument("--promote", action="store_true",
                   help="make the key --add appended the newest, re-encrypt under it")
    p.add_argument("--drop-old", action="store_true",
                   help="then leave only the newest key in the file")
    p.add_argument("--batch", type=int, default=500, help="rows per transaction")
    p = sub.add_parser("grants")
    p.add_argument("--prefix", default="pvekvm", help="user names: PREFIX_billing, ...")
    p.add_argument("--host", default="%", help="MariaDB host part of the users")
    p.add_argument("--vhost", help="RabbitMQ vhost (default: the broker URL's)")
    sub.add_parser("check")
    p = sub.add_parser("config-check")
    p.add_argument("file")
    p = sub.add_parser("load-catalog")
    p.add_argument("file")
    p = sub.add_parser("history")
    p.add_argument("service_id", type=int)
    for name in ("resume", "cancel"):
        p = sub.add_parser(name)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("ref", nargs="?", help="a service id, or op:N for an operation id")
        which.add_argument("--all", action="store_true", help="every paused operation")
        which.add_argument("--reason", type=_reason_text, metavar="TEXT",
                           help="the paused operations whose pause reason contains TEXT")
        which.add_argument("--cluster", metavar="C",
                           help="the paused operations of the services in cluster C")
    p = sub.add_parser("dead-letters")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--width", type=int, default=300, help="cut each body at this many "
                   "characters (default 300)")
    p.add_argument("--full", action="store_true", help="print whole bodies")
    sub.add_parser("pools")
    sub.add_parser("status")
    sub.add_parser("machines").add_argument("kind", nargs="?", metavar="KIND")
    p = sub.add_parser("migrate")
    p.add_argument("service_id", type=int)
    p.add_argument("--node", type=_node_name, default=None,
                   help="target node (default: where placement chooses)")
    p = sub.add_parser("node")
    p.add_argument("--cluster", metavar="C", help="the node's cluster (default: the first)")
    nodes = p.add_subparsers(dest="node_cmd", required=True)
    q = nodes.add_parser("maintenance")
    q.add_argument("node", type=_node_name)
    q.add_argument("state", choices=("on", "off"))
    q = nodes.add_parser("drain")
    q.add_argument("node", type=_node_name)
    q.add_argument("--no-watch", action="store_true", help="start it and return (the "
                   "scheduler moves the VMs)")
    q.add_argument("--timeout", type=float, default=3600.0, help="stop watching after S s")
    nodes.add_parser("undrain").add_argument("node", type=_node_name)
    nodes.add_parser("status").add_argument("node", type=_node_name, nargs="?")
    p = sub.add_parser("isos")
    p.add_argument("storage")
    p.add_argument("--node", default=None)
    p.add_argument("--cluster", metavar="C", help="the storage's cluster (default: the first)")
    add_api_command(sub)
    _adoption().add_commands(sub)
    p = sub.add_parser("smtp-sink", help="a local mail sink where [smtp] points (a trial)")
    p.add_argument("--dir", default="var/mail", help="where each message is kept (NNNN.eml)")
    p = sub.add_parser("webhooks")
    p.add_argument("action", nargs="?", choices=("status", "retry", "new-secret"),
                   default="status")
    p.add_argument("name", nargs="?", help="retry: the endpoint's name (or id)")
    p.add_argument("--service", type=int, help="retry: only this service's stream")
    p.add_argument("--json", action="store_true", help="status as JSON")
    add_console_command(sub)
    return ap


def _reason_text(text: str) -> str:
    if not text.strip() or len(text) > 200:
        raise argparse.ArgumentTypeError("TEXT must be 1 to 200 characters, not blank "
                                         "(--all acts on every paused operation)")
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "webhooks" and args.action == "new-secret":
        from pvekvm.webhooks.signing import new_secret

        print(new_secret())
        return 0
    if args.cmd == "config-check":
        return cmd_config_check(args.file)
    if args.cmd == "api" and args.token_cmd is not None:  # needs no settings nor database
        from pvekvm.apps.api import __main__ as token_helper

        return token_helper.main([args.token_cmd, *([args.token] if args.token_cmd ==
                                                     "hash-token" else [])])
    settings = preflight.settings_or_exit(args.config, PROG)
    if args.cmd == "init-db":
        return cmd_init_db(settings)
    if args.cmd == "check":
        return cmd_check(settings)
    preflight.require(settings, NEEDS[args.cmd], f"{PROG} {args.cmd}")
    if {"database", "database-exists"} & set(NEEDS[args.cmd]):
        bind(settings.database_url)
    try:
        return COMMANDS[args.cmd](settings, args) or 0
    except Exception as exc:  # noqa: BLE001 - a dependency that went away mid-command: one line
        print(f"{PROG} {args.cmd}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def add_api_command(sub: Subparsers) -> None:
    """``api``: serve the HTTP service API with uvicorn (stateless; run several behind a
    balancer or give ``--workers N``); ``api new-token`` / ``api hash-token TOKEN``: a billing
    token and its ``[api.tokens]`` line (the same as ``python -m pvekvm.apps.api new-token``)."""
    p = sub.add_parser("api", description="Serve the HTTP service API; `api new-token` makes "
                       "a billing token for [api.tokens] first.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info")
    tokens = p.add_subparsers(dest="token_cmd", metavar="new-token | hash-token TOKEN")
    tokens.add_parser("new-token", help="print a new billing token and its [api.tokens] line")
    tokens.add_parser("hash-token", help="print the [api.tokens] value of an existing "
                      "token").add_argument("token")

    def run(args: argparse.Namespace, settings: Settings) -> int:
        from pvekvm.apps.api.app import no_token_warning, serve

        if not settings.api.tokens:
            print(no_token_warning(settings), file=sys.stderr, flush=True)
        serve(args.host, args.port, args.workers, args.config, args.log_level)
        return 0

    p.set_defaults(run=run)


def add_console_command(sub: Subparsers) -> None:
    """``console-proxy``: the browser console's proxy (pvekvm/console/proxy.py): serves noVNC
    at /console/ and relays each single-use console token's session to PVE."""
    p = sub.add_parser("console-proxy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)

    def run(settings: Settings, args: argparse.Namespace) -> None:
        import logging

        from pvekvm.console.proxy import serve_forever

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        serve_forever(settings, args.host, args.port)

    p.set_defaults(run=run)


def cmd_machines(settings: Settings, kind: str | None) -> int:
    """Print every machine's table (or ``kind``'s); an unknown kind: exit 2 naming the kinds."""
    from pvekvm.lifecycle import RetryPolicy
    from pvekvm.machine_table import tables
    from steps.machines import MACHINES

    if kind is not None and kind not in MACHINES:
        print(f"{PROG} machines: unknown kind {kind!r} (kinds: {', '.join(MACHINES)})",
              file=sys.stderr)
        return preflight.EXIT_CONFIG
    chosen = [MACHINES[kind]] if kind is not None else list(MACHINES.values())
    print(tables(chosen, RetryPolicy.from_settings(settings.engine)))
    return 0


def engine_status(settings: Settings) -> str:
    """What an operator checks first: what runs, what waits, what is stuck, what is queued."""
    from pvekvm.models import Operation, database

    lines = ["operations:"]
    for kind, status, n in database.execute_sql(
            "SELECT kind, status, COUNT(*) FROM operations GROUP BY kind, status "
            "ORDER BY kind, status").fetchall():
        lines.append(f"  {kind:<18} {status:<9} {n:>6}")
    paused = Operation.select().where(Operation.status == OpStatus.PAUSED).order_by(Operation.id)
    lines += [f"  paused: sid:{op.service_id} {op.kind} at ({op.state}) — {op.error} "
              + (f"[auto-resume {op.auto_resume_at:%Y-%m-%d %H:%M:%S}]" if op.auto_resume_at
                 else "[waits for an operator]") for op in paused.limit(20)]
    auto, manual, due = database.execute_sql(
        "SELECT COUNT(auto_resume_at), COUNT(*) - COUNT(auto_resume_at), MIN(auto_resume_at) "
        f"FROM operations WHERE status = '{OpStatus.PAUSED}'").fetchone()
    if auto or manual:
        lines.append(f"  paused in all: {auto + manual}: {auto} resume by themselves"
                     + (f" (next at {due:%Y-%m-%d %H:%M:%S})" if due else "")
                     + f", {manual} wait for an operator")
    lines.append("services:")
    by_cluster = database.execute_sql(
        "SELECT cluster, status, COUNT(*) FROM services GROUP BY cluster, status "
        "ORDER BY cluster, status").fetchall()
    several = len({c for c, _, _ in by_cluster} | set(settings.cluster_names)) > 1
    for cluster, status, n in by_cluster:  # per cluster once there are several
        lines.append(f"  {(cluster + ' ') if several else ''}{status:<18} {n:>6}")
    unknown = sorted({c for c, _, _ in by_cluster} - set(settings.cluster_names))
    if unknown:
        lines.append(f"  services in clusters the settings do not name: {', '.join(unknown)} "
                     "(their steps pause: add them to [[clusters]])")
    lines += ["nodes:"] + [f"  {line}" for line in _drain().node_status(None).splitlines()]
    lines.append("queues (messages ready):")
    topo = messaging.Topology(settings.namespace)
    conn = messaging.connect(settings.amqp_url)
    try:
        ch = conn.channel()
        for queue in topo.all_queues():
            try:
                depth = ch.queue_declare(queue, passive=True).method.message_count
            except Exception:  # noqa: BLE001 - not declared yet: no worker has started
                ch = conn.channel()
                depth = "-"
            lines.append(f"  {queue:<32} {depth:>6}")
    finally:
        conn.close()
    return "\n".join(lines)


def pool_usage() -> str:
    from peewee import fn

    from pvekvm.models import IpAddress, IpPool

    lines = [f"{'pool':<16} {'v':>1} {'network':<22} {'cluster':<12} {'free':>6} {'held':>6}"]
    for pool in IpPool.select().order_by(IpPool.cluster, IpPool.name):
        held = (IpAddress.select(fn.COUNT(IpAddress.id))
                .where((IpAddress.pool_id == pool.id) & IpAddress.service_id.is_null(False))
                .scalar())
        total = IpAddress.select().where(IpAddress.pool_id == pool.id).count()
        network = pool.network
        if pool.assign is not None:  # a prefix pool: rows exist only for prefixes handed out
            bits = int(pool.network.rsplit("/", 1)[1])
            total = 1 << (int(pool.assign) - bits)
            network = f"{pool.network} /{pool.assign}"
        lines.append(f"{pool.name:<16} {pool.version:>1} {network:<22} "
                     f"{pool.cluster or '(shared)':<12} {total - held:>6} {held:>6}")
    return "\n".join(lines)


def list_isos(settings: Settings, storage: str, node: str | None,
              cluster: str | None = None) -> str:
    from pvekvm.isos import iso_group
    from pvekvm.proxmox import client

    conn = settings.proxmox_of(cluster)
    if conn is None:
        raise ConfigError("no [proxmox] connection configured")
    pve = client(conn)
    node = node or pve.get("nodes")[0]["node"]
    groups: dict[str, list[str]] = {}
    for item in pve.get(f"nodes/{node}/storage/{storage}/content", content="iso"):
        name = item["volid"].split("/", 1)[-1]
        groups.setdefault(iso_group(name), []).append(name)
    return "\n".join(f"{g}: {', '.join(sorted(n))}"
                     for g, n in sorted(groups.items(), key=lambda kv: (kv[0] == "OTHER", kv[0])))


if __name__ == "__main__":
    sys.exit(main())
