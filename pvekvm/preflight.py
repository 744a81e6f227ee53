"""Dependency checks: is each thing pvekvm depends on there, reachable and usable?

Each check returns :class:`Verdict` lines (``ok`` / ``FAIL`` / ``skip``): what was checked, and on
failure where the setting comes from (file and key, or environment variable) and the fix. Entry
points call :func:`require` at start (one line per failure on stderr, then exit
``EXIT_DEPENDENCY``); ``python -m pvekvm check`` prints every line.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pymysql
import requests

from pvekvm.config import ConfigError, PlacementSettings, ProxmoxSettings, Settings, load_settings
from pvekvm.db import latest_version, redact
from pvekvm.dburl import parse_url
from pvekvm.galera import connect_writer
from pvekvm.messaging import broker_urls

EXIT_CONFIG = 2  # a setting is missing or malformed
EXIT_DEPENDENCY = 3  # a setting is fine but what it names does not answer

#: privileges our Proxmox calls need (pve-api schema ``permissions`` of each endpoint we call),
#: on the ACL paths where PVE checks them: clone/create/destroy (VM.Clone, VM.Allocate),
#: config/resize/cloud-init/firewall (VM.Config.*), migrate, power, snapshots (incl. rollback),
#: vzdump and restore (VM.Backup + Datastore.AllocateSpace), storage listing and backup deletion
#: (Datastore.AllocateSpace), task status (Sys.Audit), bridges (SDN.Use).
REQUIRED_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "/vms": ("VM.Allocate", "VM.Clone", "VM.Audit", "VM.Config.Disk", "VM.Config.CDROM",
             "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
             "VM.Config.Options", "VM.Config.Cloudinit", "VM.Migrate", "VM.PowerMgmt",
             "VM.Snapshot", "VM.Snapshot.Rollback", "VM.Backup"),
    "/storage": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "/nodes": ("Sys.Audit",),
    "/sdn": ("SDN.Use",),
}


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str  # "ok", "FAIL" or "skip" (could not be looked at; not a failure)
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<30}  {self.detail}"


def _ok(name: str, detail: str) -> Verdict:
    return Verdict(name, "ok", detail)


def _fail(name: str, detail: str) -> Verdict:
    return Verdict(name, "FAIL", detail)


def _where(settings: Settings, what: str, default: str) -> str:
    return settings.origin.get(what, default)


# --- MariaDB -----------------------------------------------------------------------------------

def check_database(settings: Settings, schema: bool = True) -> Verdict:
    """Reachable, the database exists, and (``schema``) its schema version is the code's."""
    url = settings.database_url
    where = _where(settings, "database", "DATABASE_URL")
    target = parse_url(url)
    name = target.name
    host = ",".join(f"{h}:{p}" for h, p in target.nodes)
    try:  # a Galera cluster's nodes: the writer (pvekvm/galera.py), as every process will
        conn = connect_writer(target, database=name, connect_timeout=5)
        host = f"{conn.host}:{conn.port}"
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        msg = exc.args[-1] if exc.args else str(exc)
        if code == 1049:
            return _fail("MariaDB", f"database `{name}` does not exist on {host} ({where}): "
                         "run `python -m pvekvm init-db`")
        if code in (1044, 1045, 1698):
            return _fail("MariaDB", f"access denied on {host} ({where} = {redact(url)}): {msg}; "
                         "fix the user/password in the URL or grant access")
        return _fail("MariaDB", f"cannot reach {host} ({where} = {redact(url)}): {msg}; "
                     "start MariaDB or fix the URL")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            server = cur.fetchone()[0]
            if not schema:
                return _ok("MariaDB", f"{server} at {host}, database `{name}`")
            version = None
            if cur.execute("SHOW TABLES LIKE 'schema_version'"):
                cur.execute("SELECT MAX(version) FROM schema_version")
                version = cur.fetchone()[0]
    finally:
        conn.close()
    latest = latest_version()
    if version is None:
        return _fail("MariaDB", f"database `{name}` on {host} has no pvekvm schema ({where}): "
                     "run `python -m pvekvm init-db`")
    if version < latest:
        return _fail("MariaDB", f"database `{name}` is at schema version {version}, this code "
                     f"needs {latest}: run `python -m pvekvm init-db` (applies the migrations)")
    if version > latest:
        return _fail("MariaDB", f"database `{name}` is at schema version {version}, newer than "
                     f"this code ({latest}): upgrade pvekvm")
    return _ok("MariaDB", f"{server} at {host}, database `{name}`, schema version {version}")


# --- RabbitMQ ----------------------------------------------------------------------------------

def check_broker(settings: Settings, cluster: bool = True) -> list[Verdict]:
    """Connect and open a channel; with ``cluster``, each node's state from the management API
    (skipped when that API does not answer)."""
    verdict, props = broker_verdict(settings.amqp_url, _where(settings, "amqp", "AMQP_URL"))
    if verdict.failed or not cluster:
        return [verdict]
    return [verdict] + _broker_nodes(pika.URLParameters(broker_urls(settings.amqp_url)[0]))


def broker_verdict(url: str, where: str) -> tuple[Verdict, dict[str, Any]]:
    """Connect to the broker at ``url`` (set at ``where``) and open a channel. A setting naming
    several nodes (comma-separated) passes when one of them answers, as the workers need no
    more; when none does, the first node's failure is the verdict."""
    verdicts = []
    for node_url in broker_urls(url):
        verdict, props = _node_verdict(node_url, where)
        if not verdict.failed:
            return verdict, props
        verdicts.append(verdict)
    return verdicts[0], {}


def _node_verdict(url: str, where: str) -> tuple[Verdict, dict[str, Any]]:
    params = pika.URLParameters(url)
    params.connection_attempts, params.socket_timeout = 1, 5
    params.blocked_connection_timeout, params.heartbeat = 5, 0
    host = f"{params.host}:{params.port}"
    vhost = params.virtual_host
    try:
        with _quiet("pika"):  # pika logs each failed attempt with a traceback; we say it once
            conn = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAccessDeniedError:
        return _fail("RabbitMQ", f"vhost '{vhost}' missing or not allowed on {host} ({where}): "
                     f"rabbitmqctl add_vhost {vhost} && rabbitmqctl set_permissions -p "
                     f"{vhost} {params.credentials.username} '.*' '.*' '.*'"), {}
    except pika.exceptions.ProbableAuthenticationError:
        return _fail("RabbitMQ", f"login refused for user '{params.credentials.username}' on "
                     f"{host} ({where} = {redact(url)}): fix the user/password in the URL"), {}
    except pika.exceptions.ConnectionClosedByBroker as exc:
        return _fail("RabbitMQ", f"{host} closed the connection ({where}): {exc.reply_text}"), {}
    except (pika.exceptions.AMQPError, OSError) as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc) else "no answer"
        if isinstance(exc, pika.exceptions.AMQPConnectionError) and not str(exc):
            detail = "connection refused or timed out"
        return _fail("RabbitMQ", f"cannot reach {host} ({where} = {redact(url)}): "
                     f"{detail}; start RabbitMQ or fix the URL"), {}
    try:
        conn.channel().close()
        props = conn._impl.server_properties or {}
    finally:
        conn.close()
    version = props.get("version", b"?")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return _ok("RabbitMQ", f"{version} at {host}, vhost '{vhost}'"), props


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _broker_nodes(params: pika.URLParameters) -> list[Verdict]:
    api = f"http://{params.host}:15672/api/nodes"
    creds = params.credentials
    try:
        r = requests.get(api, auth=(creds.username, creds.password), timeout=5)
        r.raise_for_status()
        nodes = r.json()
    except (requests.RequestException, ValueError) as exc:
        return [Verdict("RabbitMQ nodes", "skip", f"management API {api} not usable "
                        f"({type(exc).__name__}): enable rabbitmq_management to list nodes")]
    return [(_ok if n.get("running") else _fail)(
        f"RabbitMQ node {n.get('name')}", "running" if n.get("running") else
        "not running: start it (rabbitmqctl -n NODE start_app)") for n in nodes]


# --- Proxmox -----------------------------------------------------------------------------------

def check_proxmox(settings: Settings, nodes: bool = True, privileges: bool = True,
                  endpoints: bool = True) -> list[Verdict]:
    """API reachable (through any endpoint) and the token accepted; each endpoint of several
    answering; each node online; the token holds every privilege in REQUIRED_PRIVILEGES
    (``GET /access/permissions``). Every cluster of ``[[clusters]]`` so (its verdicts named
    ``Proxmox NAME``); ``[proxmox]`` alone: as one, named ``Proxmox``."""
    pve = settings.proxmox
    where = _where(settings, "proxmox", "PVE_CONNECTION_FILE or [proxmox]")
    if pve is None:  # the origin then says why there is none
        return [_fail("Proxmox", settings.origin.get("proxmox") or "no Proxmox connection: "
                      "set PVE_CONNECTION_FILE or [proxmox] in the settings")]
    clusters = settings.all_clusters
    out: list[Verdict] = []
    for c in clusters:
        label = "Proxmox" if len(clusters) == 1 else f"Proxmox {c.name}"
        out += _check_cluster(c.proxmox, where if len(clusters) == 1 else f"{where} {c.name}",
                              label, nodes, privileges, endpoints)
        if c.placement is not None:  # it counts room its own way: say how
            out.append(_ok(f"{label} placement", f"{ratios(c.placement)} ([[clusters]] "
                           f"{c.name} placement, the rest from [placement])"))
    return out


def ratios(ps: PlacementSettings) -> str:
    """A cluster's overcommit ratios, as ``config-check`` and ``check`` say them."""
    return (f"memory {ps.memory_overcommit:g}x, cpu {ps.cpu_overcommit:g}x, "
            f"disk {ps.disk_overcommit:g}x")


def _check_cluster(pve: ProxmoxSettings, where: str, label: str, nodes: bool,
                   privileges: bool, endpoints: bool) -> list[Verdict]:
    from pvekvm.proxmox import Proxmox, ProxmoxError

    try:
        api = Proxmox(pve, timeout=10)
        version = api.get("version")
    except ProxmoxError as exc:
        if exc.status == 401:
            return [_fail(label, f"{pve.base_url} refused token {pve.token_id} ({where}): "
                          "check token_id/token_secret")]
        return [_fail(label, f"cannot reach {pve.base_url} ({where}): "
                      f"{str(exc).splitlines()[0][:160]}")]
    except Exception as exc:  # noqa: BLE001 - e.g. a CA bundle that cannot be read
        return [_fail(label, f"cannot use {pve.base_url} ({where}): "
                      f"{type(exc).__name__}: {str(exc)[:160]}")]
    out = [_ok(label, f"PVE {version.get('version')} at {pve.base_url}, "
               f"token {pve.token_id}")]
    if endpoints and len(pve.urls) > 1:
        out += endpoint_verdicts(pve)
    try:
        if nodes:
            for n in sorted(api.get("nodes"), key=lambda n: n.get("node", "")):
                online = n.get("status") == "online"
                out.append((_ok if online else _fail)(
                    f"{label} node {n.get('node')}",
                    "online" if online else f"{n.get('status', 'unknown')}: the node does not "
                    "answer its cluster; steps that need it will wait"))
        if privileges:
            out.append(_privileges(api.get("access/permissions"), pve.token_id, label))
    except ProxmoxError as exc:
        out.append(_fail(label, f"{pve.base_url}: {str(exc).splitlines()[0][:160]}"))
    return out


def endpoint_verdicts(pve: ProxmoxSettings) -> list[Verdict]:
    """One line per endpoint of the cluster: answers ``GET /version`` or not (the engine's
    calls go to the others meanwhile, pvekvm/endpoints.py)."""
    from pvekvm.endpoints import host_port
    from pvekvm.pvehttp import PveSession, TransportError

    out = []
    auth = f"PVEAPIToken={pve.token_id}={pve.token_secret}"
    for url in pve.urls:
        session = PveSession(*host_port(url), auth, pve.ca_bundle, 5.0)
        try:
            resp = session.request("GET", url.rstrip("/") + "/version")
            if resp.status_code != 200:
                raise TransportError(f"HTTP {resp.status_code} {resp.reason}", not_sent=False)
            out.append(_ok(f"Proxmox endpoint {url}", "answers"))
        except (TransportError, OSError) as exc:
            out.append(_fail(f"Proxmox endpoint {url}", f"does not answer ({str(exc)[:120]}); "
                             "calls go to the other endpoints until it does"))
        finally:
            session.close()
    return out


def missing_privileges(perms: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """Privileges of REQUIRED_PRIVILEGES absent from a ``GET /access/permissions`` answer, per
    path (a privilege granted on a sub-path, e.g. one bridge under /sdn, counts)."""
    missing: dict[str, list[str]] = {}
    for path, privs in REQUIRED_PRIVILEGES.items():
        held = set(perms.get(path, {}))
        if path == "/sdn":
            for p, granted in perms.items():
                if p.startswith("/sdn/"):
                    held |= set(granted)
        lacking = [p for p in privs if p not in held]
        if lacking:
            missing[path] = lacking
    return missing


def _privileges(perms: dict[str, dict[str, int]], token: str,
                label: str = "Proxmox") -> Verdict:
    missing = missing_privileges(perms)
    if not missing:
        n = sum(len(p) for p in REQUIRED_PRIVILEGES.values())
        return _ok(f"{label} privileges", f"token {token} holds the {n} privileges pvekvm uses")
    what = "; ".join(f"{', '.join(p)} on {path}" for path, p in missing.items())
    return _fail(f"{label} privileges", f"token {token} lacks {what}: grant them "
                 "(pveum acl modify PATH --tokens TOKEN --roles ROLE) or use privsep=0")


# --- SMTP --------------------------------------------------------------------------------------

def check_smtp(settings: Settings) -> Verdict:
    """Connect, EHLO, STARTTLS/login when configured, QUIT; no mail is sent."""
    smtp = settings.smtp
    where = _where(settings, "smtp", "[smtp] / SMTP_HOST, SMTP_PORT")
    hostport = f"{smtp.host}:{smtp.port}"
    timeout = min(smtp.timeout, 5.0)
    try:
        context = ssl.create_default_context()
        client = (smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
                  if smtp.ssl else smtplib.SMTP(smtp.host, smtp.port, timeout=timeout))
        with client:
            code, _ = client.ehlo()
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password)
    except (smtplib.SMTPException, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        return _fail("SMTP", f"{hostport} ({where}): {detail[:160]}; start the mail relay or "
                     "fix host/port (a trial: `python -m pvekvm smtp-sink &`)")
    return _ok("SMTP", f"{hostport} answers (EHLO {code})")


# --- DNS providers -----------------------------------------------------------------------------

def check_dns(settings: Settings) -> list[Verdict]:
    """Each configured zone looked up read-only at its provider (needs the bound database)."""
    from pvekvm import dns, dnssync
    from pvekvm.dns.core import endpoint

    try:
        zones = dnssync.configured_zones(settings.secret_key_file)
    except Exception as exc:  # noqa: BLE001 - bad key file or database: one line
        return [_fail("DNS", f"cannot read the DNS providers: {type(exc).__name__}: {exc}")]
    if not zones:
        return [Verdict("DNS", "skip", "no DNS zones in the catalog")]
    out = []
    for zone in zones:
        name = f"DNS {zone.provider} {zone.name}"
        try:
            dns.build_provider(zone).probe(zone.name)
            out.append(_ok(name, f"zone found at {endpoint(zone)}"))
        except (dns.DnsError, ValueError, requests.RequestException) as exc:
            out.append(_fail(name, f"{str(exc)[:200]} (catalog [[dns_providers]])"))
    return out


# --- secret key file ---------------------------------------------------------------------------

def check_secret_key(settings: Settings) -> Verdict:
    """The key file exists and holds keys; a missing one is created only while the database
    holds no encrypted value (a new installation), never beside data it could not read."""
    from pvekvm import keyrotate, secrets

    path = settings.secret_key_file
    where = settings.origin.get("secret_key_file", "[secrets] key_file")
    try:
        n = len(secrets.read_keys(path))
        return _ok("secret key", f"{path}: {n} key{'s' if n > 1 else ''}")
    except ValueError as exc:
        return _fail("secret key", f"{exc}")
    except secrets.KeyFileMissing:
        pass
    from peewee import DatabaseError

    from pvekvm.db import open_database

    try:
        db = open_database(settings.database_url)
        try:
            held = keyrotate.encrypted_values(db)
        finally:
            db.close()
    except (pymysql.err.MySQLError, DatabaseError) as exc:
        return Verdict("secret key", "skip", f"{path} ({where}) does not exist and the database "
                       f"cannot say whether data needs it: {exc.args[-1] if exc.args else exc}")
    if held:
        return _fail("secret key", f"{path} ({where}) does not exist, but the database holds "
                     f"{held} values encrypted with a key: point {where} at that key file "
                     "(a new key would make them unreadable)")
    created = secrets.create_key(path)
    return _ok("secret key", f"{path}: {'created' if created else 'exists'} (no encrypted data "
               "yet)")


# --- start-up ----------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Settings], list[Verdict]]] = {
    "database": lambda s: [check_database(s)],
    "database-exists": lambda s: [check_database(s, schema=False)],
    "broker": lambda s: check_broker(s, cluster=False),
    # one endpoint answering is enough to start: the others are looked at by `check`
    "proxmox": lambda s: check_proxmox(s, nodes=False, privileges=False, endpoints=False),
    "smtp": lambda s: [check_smtp(s)],
    "secret-key": lambda s: [check_secret_key(s)],
}


def settings_or_exit(path: str | None, prog: str) -> Settings:
    """load_settings, or one line on stderr and exit EXIT_CONFIG."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def require(settings: Settings, needs: Iterable[str], prog: str) -> None:
    """Run the start-up checks named in ``needs`` (keys of CHECKS); on any failure print one
    line per failing dependency on stderr and exit EXIT_DEPENDENCY."""
    failed = [v for need in needs for v in CHECKS[need](settings) if v.failed]
    for v in failed:
        print(f"{prog}: cannot start: {v.name}: {v.detail}", file=sys.stderr)
    if failed:
        raise SystemExit(EXIT_DEPENDENCY)
