"""Settings: one TOML file (``PVEKVM_CONFIG``, default ``config/pvekvm.toml``) plus environment
overrides for what differs per machine (``DATABASE_URL`` — one server, or a Galera cluster's
nodes comma-separated in the host part (pvekvm/db.py) — ``AMQP_URL`` — one broker URL or
several comma-separated, the nodes of a cluster — ``PVEKVM_NAMESPACE``,
``PVE_CONNECTION_FILE``, ``SMTP_HOST``, ``SMTP_PORT``, ``PVEKVM_SECRET_KEY_FILE``,
``PVEKVM_METRICS_PORT``, ``PVEKVM_LOG_FORMAT``).

Every entry point reads them through :func:`load_settings`, which validates them: a wrong or
missing setting is a :class:`ConfigError` naming the file and key (or the variable)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

from pvekvm.limits import MAX_SERVICE_ID
from pvekvm.webhooks import config as webhook_config
from pvekvm.webhooks.config import WebhookSettings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pvekvm.toml"


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str = ""
    password: str = ""
    sender: str = "pvekvm@localhost"
    timeout: float = 10.0


@dataclass(frozen=True)
class ProxmoxSettings:
    """Where Proxmox answers: a pvesim-style connection file, or the same keys inline.

    ``endpoints``: every node's API of the cluster (or a load balancer), tried in order when one
    cannot be reached (pvekvm/endpoints.py); ``base_url`` is the first (empty: base_url alone).
    ``max_calls_per_node``: calls this process has in flight at once per node's API (0: no
    bound); ``endpoint_retry_s``: how long an endpoint that failed is skipped before a probe.
    One cluster's settings: a later ``[[clusters]]`` holds one of these per cluster."""

    base_url: str
    token_id: str
    token_secret: str
    ca_bundle: str | bool = True
    endpoints: tuple[str, ...] = ()
    max_calls_per_node: int = 6
    endpoint_retry_s: float = 10.0

    @property
    def urls(self) -> tuple[str, ...]:
        """Every endpoint, the preferred first (``base_url`` alone: a list of one)."""
        return self.endpoints or (self.base_url,)

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        hostport = self.base_url.split("://", 1)[-1].split("/", 1)[0]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 8006

    @classmethod
    def from_connection(cls, data: dict[str, Any], **tuning: Any) -> ProxmoxSettings:
        """From a pvesim connection file (``endpoints``: one per node when it has several;
        with one, ``base_url`` says where)."""
        endpoints = tuple(data.get("endpoints") or ())
        if len(endpoints) < 2:
            endpoints = ()
        return cls(
            base_url=endpoints[0] if endpoints else data["base_url"],
            token_id=data["token_id"],
            token_secret=data["token_secret"],
            ca_bundle=data.get("ca_bundle", True),
            endpoints=endpoints,
            **tuning,
        )


DEFAULT_CLUSTER = "default"  # the cluster ``[proxmox]`` is, unless it says ``name``
_CLUSTER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True)
class ClusterSettings:
    """One Proxmox cluster (a location): its name, as the catalog's ``cluster = "..."``, the
    create event's ``location`` and the service row say it, and how to reach its API.
    ``vmid_min``/``vmid_max``: the VMIDs given in it (None: the engine's range); one VMID is
    given once in the whole fleet (steps/allocation.py), ranges may overlap. ``placement``:
    its own ``[clusters.placement]``, each key not set there taken from ``[placement]``
    (None: ``[placement]`` as it is); read through :meth:`Settings.placement_of`."""

    name: str
    proxmox: ProxmoxSettings
    vmid_min: int | None = None
    vmid_max: int | None = None
    placement: PlacementSettings | None = None


@dataclass(frozen=True)
class EngineSettings:
    vmid_min: int = 1000
    vmid_max: int = 899999
    max_ssh_keys: int = 10  # per service (create, reinstall, reset_password); at most 32
    clones_per_storage: int = 2
    # backup jobs per node at once: vzdump's global lock lets one run, the next waits inside PVE
    # (up to lockwait); we hold the rest in our queues instead (steps/slots.py)
    backups_per_node: int = 1
    # VM migrations at once leaving one node, and arriving on one node (steps/migrate.py;
    # a drain moves that many at a time: pvekvm/nodes.py)
    migrations_per_node: int = 2
    # how often the backup list is compared with the storages' content (workers/backup_sync.py)
    backup_sync_interval_s: float = 900.0
    # the default retry policy of every transition (steps/machine.py RetryPolicy): a fault is
    # retried after retry_first_s, doubling to retry_max_s, max_attempts times, then pauses;
    # waiting for a turn (a clone slot) backs off from wait_first_s to wait_max_s
    max_attempts: int = 8
    retry_first_s: float = 2.0
    retry_max_s: float = 60.0
    wait_first_s: float = 0.5
    wait_max_s: float = 4.0
    # first come, first served in a burst: at most this many deploys run at once, the others
    # wait in order of arrival (0: no limit)
    deploy_window: int = 64
    # an event for a service whose create has not arrived waits this long, then is refused
    hold_unknown_service_s: float = 120.0
    stale_after_s: float = 60.0
    # a task is looked at after these waits, then every last one: about an eighth of the time
    # it has run so far (every 0.25 s for 2 s, 0.5 s to 4 s, 1 s to 8 s, 2 s to 16 s, then 5 s),
    # so its end is seen within ~12 % of its duration (at most 5 s) at ~20 looks for a 20 s clone
    poll_delays_s: tuple[float, ...] = (0.25,) * 8 + (0.5,) * 4 + (1.0,) * 4 + (2.0,) * 4 + (5.0,)
    catalog_cache_s: float = 10.0  # products/templates are re-read at most this often
    # rescue mode's ISO (steps/rescue.py): a volume every node reaches, "storage:iso/file.iso"
    # (e.g. "iso:iso/systemrescue-11.02-amd64.iso"); "" = no rescue mode (rescue_on refused)
    rescue_iso: str = ""
    # look at a fresh task this long before polling by message (at 10 and 30 ms; 0: no look):
    # config writes end in a few ms; a longer look holds a worker thread that other orders'
    # steps wait for (0.1 s: linked clones, 20 orders, measured / floor 1.18-1.19 against 1.16
    # at 0.02 s)
    inline_task_wait_s: float = 0.03
    traffic_interval_s: float = 3600.0  # traffic accounting runs (rrddata keeps 70 minutes)
    # a paused operation resumes by itself after these waits (the last one repeats), for up to
    # auto_resume_for_h after it first paused, and within auto_resume_check_s once the
    # dependency whose fault paused it answers again (workers/autoresume.py)
    auto_resume_after_s: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 3600.0)
    auto_resume_for_h: float = 24.0
    auto_resume_check_s: float = 60.0  # the scheduler job's interval; at most one resume each


@dataclass(frozen=True)
class PlacementSettings:
    """How placement counts a node's room (pvekvm/placement.py): ``[placement]``, and each
    cluster's own (``ClusterSettings.placement``, its keys over ``[placement]``). A node takes
    ``*_overcommit`` times its memory, CPU threads and storage in VMs' configured sizes; nodes
    within ``close_mb`` of the most memory headroom count as equal (a template copy, then CPU,
    then storage decide among them); an order no node has room for waits, looking again every
    few seconds, for at most ``wait_max_s``, then fails."""

    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    disk_overcommit: float = 1.0
    close_mb: int = 2048
    wait_max_s: float = 3600.0

    def problem(self) -> str | None:
        for name in ("memory_overcommit", "cpu_overcommit", "disk_overcommit"):
            if not 0.1 <= getattr(self, name) <= 100:
                return f"{name}: expected 0.1..100, got {getattr(self, name)}"
        if self.close_mb < 0 or self.wait_max_s < 0:
            return "close_mb and wait_max_s must be >= 0"
        return None


@dataclass(frozen=True)
class MetricsSettings:
    """Where ``/metrics`` listens: ``port`` for worker processes, ``scheduler_port`` for the
    scheduler (None = no endpoint, 0 = any free port). ``log_format``: ``text`` (the step lines
    as they are) or ``json`` (one JSON object per line, for log shippers)."""

    port: int | None = None
    scheduler_port: int | None = None
    addr: str = "0.0.0.0"
    log_format: str = "text"


@dataclass(frozen=True)
class ApiSettings:
    """The service API (``python -m pvekvm api``). ``tokens``: (name, ``sha256:<hex>``) pairs, the
    SHA-256 of each billing token (the token itself is stored nowhere); a billing token may read
    and order for any service. ``client_token_ttl_s``: how long a client token lives (a mint may
    ask for less, never more). ``trusted_proxies``: addresses or networks of the reverse proxies
    whose ``X-Forwarded-For`` names the caller (none: the TCP peer is the caller).
    ``scopes``: (name, ranges) pairs from ``[api.scopes] NAME = ["3000-3999", "4711"]``: the
    billing token of that name reads, mints and orders for service ids in those ranges only (a
    billing system per brand); a token without a scope may do so for every service. The old
    ``client_token_key`` is accepted and ignored (client tokens are stored, not derived)."""

    tokens: tuple[tuple[str, str], ...] = ()
    scopes: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()
    client_token_ttl_s: int = 86400
    trusted_proxies: tuple[str, ...] = ()
    proxmox_timeout_s: float = 3.0  # live status/graphs/console: answer fast when PVE is down
    # orders a service's callers may publish through the API's client routes (rDNS set/reset),
    # per service per rolling hour, counted in audit_log (0 = no limit)
    client_events_per_hour: int = 30


@dataclass(frozen=True)
class ConsoleSettings:
    """The console proxy (``python -m pvekvm console-proxy``, ``[console]``; issue 27).
    ``public_url``: where browsers reach it (``https://console.example.net``; empty: the API
    answers a path only); ``token_ttl_s``: a console token's time to connect; sessions end
    after ``idle_timeout_s`` without keyboard/mouse input and after ``max_session_s`` in all;
    at most ``sessions_per_service`` open at once per service (0: no limit);
    ``bind_client_address``: a token connects only from the address it was minted for;
    ``check_interval_s``: how often open sessions are re-checked (suspend, terminate, the
    client token's end); ``tls_cert``/``tls_key``: serve TLS itself (empty: plain, behind the
    operator's TLS proxy); ``novnc_dir``: Debian's ``novnc`` package; ``frame_ancestors``: who
    may show the console page in a frame (CSP ``frame-ancestors``: ``'self'``, ``'none'`` or
    origins such as the billing client area's ``https://billing.example.net``)."""

    public_url: str = ""
    token_ttl_s: int = 60
    idle_timeout_s: int = 900
    max_session_s: int = 14400
    sessions_per_service: int = 2
    bind_client_address: bool = True
    check_interval_s: float = 1.0
    tls_cert: str = ""
    tls_key: str = ""
    novnc_dir: str = "/usr/share/novnc"
    frame_ancestors: tuple[str, ...] = ("'self'",)


@dataclass(frozen=True)
class RdnsSettings:
    """Client reverse DNS (``[rdns]``). ``resolver``: the nameservers FCrDNS asks, "ip" or
    "ip:port" ("[v6]:port"), comma-separated (empty: the system's /etc/resolv.conf);
    ``timeout_s`` bounds one whole lookup; ``changes_per_hour``: PTR changes (set or reset) per
    service per rolling hour through the API, counted in audit_log (0 = no limit)."""

    resolver: str = ""
    timeout_s: float = 2.0
    changes_per_hour: int = 10

    def nameservers(self) -> list[tuple[str, int]]:
        """(address, port) pairs of ``resolver``; ValueError naming the bad entry."""
        out = []
        for entry in filter(None, (e.strip() for e in self.resolver.split(","))):
            host, port = entry, "53"
            if entry.startswith("["):
                host, _, rest = entry[1:].partition("]")
                port = rest.removeprefix(":") or "53"
            elif entry.count(":") == 1:
                host, port = entry.split(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bad port in {entry!r}")
            out.append((str(ipaddress.ip_address(host)), int(port)))
        return out


@dataclass(frozen=True)
class Settings:
    database_url: str
    amqp_url: str  # one URL, or a cluster's nodes comma-separated (tried in order)
    namespace: str = "pvekvm"
    proxmox: ProxmoxSettings | None = None
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    secret_key_file: str = "var/secret.key"
    templates_dir: str = str(ROOT / "config" / "mail")
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    rdns: RdnsSettings = field(default_factory=RdnsSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)  # [[webhooks]], ...
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    #: every cluster (``[[clusters]]``; ``[proxmox]`` alone: one named ``default_cluster``)
    clusters: tuple[ClusterSettings, ...] = ()
    default_cluster: str = DEFAULT_CLUSTER
    #: where each dependency's setting comes from ("DATABASE_URL", "config/pvekvm.toml [database]
    #: url", ...) or, for "proxmox" when there is none, why: named in start-up failures
    origin: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)


    @property
    def all_clusters(self) -> tuple[ClusterSettings, ...]:
        """Every cluster, the default first. Its API settings are always ``proxmox`` (so
        ``replace(settings, proxmox=...)`` tunes it); ``[proxmox]`` alone: one cluster."""
        if not self.clusters:
            return (ClusterSettings(self.default_cluster, self.proxmox),) if self.proxmox \
                else ()
        first = self.clusters[0]
        if self.proxmox is not None and first.proxmox is not self.proxmox:
            first = replace(first, proxmox=self.proxmox)
        return (first, *self.clusters[1:])

    @property
    def cluster_names(self) -> tuple[str, ...]:
        """Every cluster's name, the default (first) first; none configured: the default's."""
        return tuple(c.name for c in self.clusters) or (self.default_cluster,)

    def cluster(self, name: str | None) -> ClusterSettings | None:
        """The cluster called ``name`` (None: the default one), or None when unknown."""
        name = name or self.default_cluster
        return next((c for c in self.all_clusters if c.name == name), None)

    def placement_of(self, cluster: str | None) -> PlacementSettings:
        """How placement counts room in ``cluster`` (None: the default one): its own
        ``[clusters.placement]`` over ``[placement]``; a cluster without one, or unknown, gets
        ``[placement]``."""
        found = self.cluster(cluster)
        return found.placement if found is not None and found.placement is not None \
            else self.placement

    def placement_where(self, cluster: str | None) -> str:
        """Where ``cluster``'s placement settings are written (for reasons that name a key)."""
        found = self.cluster(cluster)
        if found is not None and found.placement is not None:
            return f"[[clusters]] {found.name} placement"
        return "[placement]"

    def proxmox_of(self, cluster: str | None) -> ProxmoxSettings | None:
        """How to reach ``cluster``'s API (None: the default cluster); None when unknown."""
        if cluster is None or cluster == self.default_cluster:
            return self.proxmox
        found = self.cluster(cluster)
        return found.proxmox if found else None

    def with_proxmox(self, cluster: str, proxmox: ProxmoxSettings) -> Settings:
        """The same settings with ``cluster``'s API settings replaced (tests, tuning)."""
        if cluster == self.default_cluster:
            return replace(self, proxmox=proxmox)
        return replace(self, clusters=tuple(replace(c, proxmox=proxmox) if c.name == cluster
                                            else c for c in self.clusters))


class ConfigError(ValueError):
    """A setting is missing or wrong. The message names where it is set (file and key, or
    environment variable), what is wrong and the fix, on one line."""


#: what each section of the settings file may contain (anything else is a typo worth naming)
SECTIONS: dict[str, set[str]] = {
    "database": {"url"},
    "amqp": {"url", "urls", "namespace"},
    "proxmox": {"connection_file", "base_url", "endpoints", "token_id", "token_secret",
                "ca_bundle", "max_calls_per_node", "endpoint_retry_s", "name"},
    "smtp": {f.name for f in fields(SmtpSettings)},
    "engine": {f.name for f in fields(EngineSettings)},
    "secrets": {"key_file"},
    "mail": {"templates_dir"},
    "observability": {f.name for f in fields(MetricsSettings)},
    "api": {f.name for f in fields(ApiSettings)} | {"client_token_key"},  # the key: obsolete
    "rdns": {"resolver", "timeout_s", "changes_per_hour"},
    "webhook_delivery": {f.name for f in fields(webhook_config.DeliverySettings)},
    "console": {f.name for f in fields(ConsoleSettings)},
    "placement": {f.name for f in fields(PlacementSettings)},
}
#: sections that are arrays of tables (``[[webhooks]]``), checked by their own parser
ARRAY_SECTIONS: set[str] = {"webhooks", "clusters"}
CLUSTER_KEYS = (SECTIONS["proxmox"] | {"vmid_min", "vmid_max", "placement"})
def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The settings file in use: ``path``, else ``$PVEKVM_CONFIG``, else config/pvekvm.toml."""
    return Path(path or os.environ.get("PVEKVM_CONFIG") or DEFAULT_CONFIG)


def _named_file(path: str | os.PathLike[str] | None) -> Path:
    """The settings file; one named explicitly (``--config``, ``PVEKVM_CONFIG``) must exist,
    the default may be absent (defaults and environment only)."""
    cfg = config_path(path)
    if not cfg.exists() and (path or os.environ.get("PVEKVM_CONFIG")):
        named_by = "--config" if path else "PVEKVM_CONFIG"
        raise ConfigError(f"{shown(cfg)}: settings file not found (named by {named_by})")
    return cfg


def shown(path: Path) -> str:
    """``path`` as the user would type it (relative to the working directory when inside it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_raw(path: Path) -> dict[str, Any]:
    """The settings file's tables, checked for unknown sections and keys (absent file = {})."""
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown(path)}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{shown(path)}: cannot read: {exc.strerror or exc}") from None
    for section, body in raw.items():
        if section in ARRAY_SECTIONS and isinstance(body, list):
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{shown(path)}: unknown section [{section}] "
                              f"(known: {', '.join(sorted(SECTIONS))})")
        if not isinstance(body, dict):
            raise ConfigError(f"{shown(path)}: {section} must be a table ([{section}])")
        for key in body:
            if key not in SECTIONS[section]:
                raise ConfigError(f"{shown(path)}: [{section}] unknown key {key!r} "
                                  f"(known: {', '.join(sorted(SECTIONS[section]))})")
    return raw


def connection_file_setting(path: str | os.PathLike[str] | None = None) -> tuple[str, str] | None:
    """(file, where it is set) of the Proxmox connection file the settings name, or None.
    ``python -m pvesim`` writes its connection file there by default."""
    if os.environ.get("PVE_CONNECTION_FILE"):
        return os.environ["PVE_CONNECTION_FILE"], "PVE_CONNECTION_FILE"
    cfg = config_path(path)
    value = read_raw(cfg).get("proxmox", {}).get("connection_file")
    return (value, f"{shown(cfg)} [proxmox] connection_file") if value else None


_S = TypeVar("_S")  # a settings dataclass


def _typed(cls: type[_S], values: dict[str, Any], where: str) -> _S:
    """``cls(**values)`` with every value checked against the type of the field's default."""
    out: dict[str, Any] = {}
    for f in fields(cast(Any, cls)):
        if f.name not in values:
            continue
        v, default = values[f.name], getattr(cls(), f.name)
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, tuple) and default and isinstance(default[0], str):
            ok = isinstance(v, list | tuple) and bool(v) and all(isinstance(x, str) for x in v)
            v = tuple(v) if ok else v
        elif isinstance(default, tuple):
            ok = isinstance(v, list | tuple) and all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in v) and bool(v)
            v = tuple(float(x) for x in v) if ok else v
        else:
            ok = isinstance(v, str)
        if not ok:
            kind = ("non-empty list of strings" if isinstance(default, tuple) and default
                    and isinstance(default[0], str)
                    else type(default).__name__.replace("tuple", "non-empty list of numbers"))
            raise ConfigError(f"{where} {f.name}: expected {kind}, got {v!r}")
        out[f.name] = v
    return cls(**out)


def _endpoint_tuning(pve_raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``max_calls_per_node`` and ``endpoint_retry_s``, with a connection file or inline."""
    out: dict[str, Any] = {}
    calls = pve_raw.pop("max_calls_per_node", None)
    if calls is not None:
        if not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
            raise ConfigError(f"{where} max_calls_per_node: expected a number of calls "
                              f"(0 = no bound), got {calls!r}")
        out["max_calls_per_node"] = calls
    retry = pve_raw.pop("endpoint_retry_s", None)
    if retry is not None:
        if not isinstance(retry, int | float) or isinstance(retry, bool) or retry <= 0:
            raise ConfigError(f"{where} endpoint_retry_s: expected seconds > 0, got {retry!r}")
        out["endpoint_retry_s"] = float(retry)
    return out


def _proxmox(raw: dict[str, Any], cfg: Path) -> tuple[ProxmoxSettings | None, str]:
    """The Proxmox connection and where it comes from (or why there is none)."""
    pve_raw = dict(raw.get("proxmox", {}))
    pve_raw.pop("name", None)  # the cluster's name (load_settings reads it)
    tuning = _endpoint_tuning(pve_raw, f"{shown(cfg)} [proxmox]")
    env_file = os.environ.get("PVE_CONNECTION_FILE")
    conn_file = env_file or pve_raw.pop("connection_file", None)
    where = "PVE_CONNECTION_FILE" if env_file else f"{shown(cfg)} [proxmox] connection_file"
    if conn_file:
        f = Path(conn_file)
        if not f.exists():
            return None, (f"{where} = {conn_file}: the file does not exist; start "
                          "`python -m pvesim` (it writes it) or set base_url, token_id and "
                          f"token_secret in [proxmox] of {shown(cfg)}")
        try:
            data = json.loads(f.read_text())
            return ProxmoxSettings.from_connection(data, **tuning), f"{where} = {conn_file}"
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where} = {conn_file}: not a readable JSON file: {exc}") from None
        except (KeyError, TypeError, IndexError) as exc:
            raise ConfigError(f"{where} = {conn_file}: lacks key {exc} (needs base_url, "
                              "token_id, token_secret)") from None
    if not pve_raw:
        return None, (f"no Proxmox connection: set [proxmox] connection_file, or base_url, "
                      f"token_id and token_secret, in {shown(cfg)} (or PVE_CONNECTION_FILE)")
    where = f"{shown(cfg)} [proxmox]"
    return _inline_proxmox(pve_raw, tuning, where), where


def _inline_proxmox(pve_raw: dict[str, Any], tuning: dict[str, Any], where: str
                    ) -> ProxmoxSettings:
    """A cluster's API settings written out (``base_url`` or ``endpoints``, the token, CA)."""
    endpoints = pve_raw.pop("endpoints", None)
    if endpoints is not None:
        if "base_url" in pve_raw:
            raise ConfigError(f"{where}: set endpoints or base_url, not both (base_url is a "
                              "list of one)")
        if (not isinstance(endpoints, list) or not endpoints
                or not all(isinstance(u, str) for u in endpoints)):
            raise ConfigError(f"{where} endpoints: expected a non-empty list of "
                              f"\"https://host:8006/api2/json\", got {endpoints!r}")
        if len(set(endpoints)) != len(endpoints):
            raise ConfigError(f"{where} endpoints: an endpoint is listed twice")
        pve_raw["base_url"] = endpoints[0]
    for key in ("base_url", "token_id", "token_secret"):
        if not isinstance(pve_raw.get(key), str) or not pve_raw[key]:
            raise ConfigError(f"{where} {key}: missing (needs base_url or endpoints, "
                              "token_id, token_secret)")
    for url in endpoints or [pve_raw["base_url"]]:
        if not url.startswith("https://"):
            raise ConfigError(f"{where} {'endpoints' if endpoints else 'base_url'}: expected "
                              f"https://host:8006/api2/json, got {url!r}")
    if "!" not in pve_raw["token_id"]:
        raise ConfigError(f"{where} token_id: expected USER@REALM!TOKENNAME, "
                          f"got {pve_raw['token_id']!r}")
    if endpoints and len(endpoints) > 1:
        pve_raw["endpoints"] = tuple(endpoints)
    return ProxmoxSettings(**pve_raw, **tuning)


def _cluster_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _CLUSTER_NAME.fullmatch(value):
        raise ConfigError(f"{where} name: expected lower-case letters, digits, '-' or '_' "
                          f"(at most 63), got {value!r}")
    return value


def _placement(raw: dict[str, Any], cfg: Path) -> PlacementSettings:
    """``[placement]``: every cluster's, unless its own ``[clusters.placement]`` says more."""
    placement = _typed(PlacementSettings, dict(raw.get("placement", {})),
                       f"{shown(cfg)} [placement]")
    if placement.problem():
        raise ConfigError(f"{shown(cfg)} [placement] {placement.problem()}")
    return placement


def _cluster_placement(value: object, base: PlacementSettings, where: str
                       ) -> PlacementSettings:
    """A cluster's ``placement`` table (``[clusters.placement]`` or an inline table): each key
    it sets over ``base`` (the global ``[placement]``), checked as ``[placement]`` is."""
    known = SECTIONS["placement"]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table ([clusters.placement] or placement = "
                          f"{{ memory_overcommit = 1.5 }}), got {value!r}")
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(sorted(known))})")
    own = _typed(PlacementSettings, dict(value), where)
    merged = replace(base, **{k: getattr(own, k) for k in value})
    if merged.problem():
        raise ConfigError(f"{where} {merged.problem()}")
    return merged


def _clusters(raw: dict[str, Any], cfg: Path, placement: PlacementSettings | None = None
              ) -> tuple[ClusterSettings, ...]:
    """``[[clusters]]``: each a name, ``connection_file`` or the ``[proxmox]`` keys inline, and
    optionally its VMID range and its own placement settings (over ``placement``, the global
    ``[placement]``). Names are unique; ``[proxmox]`` and ``[[clusters]]`` exclude each other
    (one place says where each cluster is)."""
    tables = raw.get("clusters")
    if tables is None:
        return ()
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict)
                                                              for t in tables):
        raise ConfigError(f"{shown(cfg)} [[clusters]]: expected one [[clusters]] table per "
                          "cluster")
    if raw.get("proxmox"):
        raise ConfigError(f"{shown(cfg)}: set [proxmox] (one cluster) or [[clusters]], not both")
    out: list[ClusterSettings] = []
    for i, table in enumerate(tables, 1):
        where = f"{shown(cfg)} [[clusters]] #{i}"
        unknown = set(table) - CLUSTER_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                              f"(known: {', '.join(sorted(CLUSTER_KEYS))})")
        body = dict(table)
        name = _cluster_name(body.pop("name", None), where)
        where = f"{shown(cfg)} [[clusters]] {name}"
        if name in {c.name for c in out}:
            raise ConfigError(f"{where}: a second cluster of that name")
        vmids = {k: body.pop(k) for k in ("vmid_min", "vmid_max") if k in body}
        for k, v in vmids.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 100 <= v <= 999999999:
                raise ConfigError(f"{where} {k}: expected a VMID (100..999999999), got {v!r}")
        if vmids.get("vmid_min", 100) > vmids.get("vmid_max", 999999999):
            raise ConfigError(f"{where}: vmid_min is above vmid_max")
        own = None
        if "placement" in body:
            own = _cluster_placement(body.pop("placement"), placement or PlacementSettings(),
                                     f"{where} placement")
        tuning = _endpoint_tuning(body, where)
        conn = body.pop("connection_file", None)
        if conn is not None:
            if body:
                raise ConfigError(f"{where}: connection_file says where the cluster is: "
                                  f"{sorted(body)[0]} does not go with it")
            try:
                proxmox = ProxmoxSettings.from_connection(json.loads(Path(conn).read_text()),
                                                          **tuning)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{where} connection_file = {conn}: not a readable "
                                  f"connection file: {exc}") from None
        else:
            proxmox = _inline_proxmox(body, tuning, where)
        out.append(ClusterSettings(name, proxmox, **vmids, placement=own))
    return tuple(out)


def _url(raw: dict[str, Any], cfg: Path, section: str, env: str, env_value: str | None,
         schemes: tuple[str, ...]) -> tuple[str, str]:
    """A URL setting; the broker's may name several nodes, comma-separated (or ``urls = [...]``
    in ``[amqp]``), each checked."""
    if env_value:
        value, where = env_value, env
    elif section == "amqp" and raw.get(section, {}).get("urls"):
        urls = raw[section]["urls"]
        where = f"{shown(cfg)} [{section}] urls"
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{where}: expected a list of URLs, got {urls!r}")
        value = ",".join(urls)
    else:
        value, where = raw.get(section, {}).get("url"), f"{shown(cfg)} [{section}] url"
    if not value:
        raise ConfigError(f"{where}: not set; set {env} or url in [{section}] of {shown(cfg)}")
    parts = value.split(",") if isinstance(value, str) and section == "amqp" else [value]
    for part in parts:
        if not isinstance(part, str) or urlparse(part.strip()).scheme not in schemes:
            raise ConfigError(f"{where}: expected a {' or '.join(s + '://' for s in schemes)} "
                              f"URL, got {part!r}")
    return value, where


def _broker(raw: dict[str, Any], cfg: Path) -> tuple[str, str, str]:
    amqp, where = _url(raw, cfg, "amqp", "AMQP_URL", os.environ.get("AMQP_URL"),
                       ("amqp", "amqps"))
    env = os.environ
    namespace = env.get("PVEKVM_NAMESPACE") or raw.get("amqp", {}).get("namespace", "pvekvm")
    if not isinstance(namespace, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", namespace):
        ns_where = ("PVEKVM_NAMESPACE" if env.get("PVEKVM_NAMESPACE")
                    else f"{shown(cfg)} [amqp] namespace")
        raise ConfigError(f"{ns_where}: expected letters, digits, '.', '_' or '-', "
                          f"got {namespace!r}")
    return amqp, where, namespace


def broker_settings(path: str | os.PathLike[str] | None = None) -> tuple[str, str, str]:
    """(AMQP URL, where it is set, namespace) read exactly as :func:`load_settings` reads them,
    for programs that need only the broker (the producer CLI)."""
    cfg = _named_file(path)
    return _broker(read_raw(cfg), cfg)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file (absent file = defaults) and apply environment overrides; raise
    ConfigError naming the file and key (or variable) of the first wrong setting."""
    cfg = _named_file(path)
    raw = read_raw(cfg)
    env = os.environ
    db, db_where = _url(raw, cfg, "database", "DATABASE_URL", os.environ.get("DATABASE_URL"),
                        ("mysql", "mysql+pymysql", "mariadb"))
    amqp, amqp_where, namespace = _broker(raw, cfg)
    placement = _placement(raw, cfg)
    clusters = _clusters(raw, cfg, placement)
    proxmox: ProxmoxSettings | None
    if clusters:
        proxmox, pve_where = clusters[0].proxmox, f"{shown(cfg)} [[clusters]]"
        default_cluster = clusters[0].name
    else:
        proxmox, pve_where = _proxmox(raw, cfg)
        default_cluster = _cluster_name(raw.get("proxmox", {}).get("name", DEFAULT_CLUSTER),
                                        f"{shown(cfg)} [proxmox]")
    smtp_raw = dict(raw.get("smtp", {}))
    smtp_where = f"{shown(cfg)} [smtp]"
    if env.get("SMTP_HOST"):
        smtp_raw["host"] = env["SMTP_HOST"]
        smtp_where = "SMTP_HOST"
    if env.get("SMTP_PORT"):
        if not env["SMTP_PORT"].isdigit():
            raise ConfigError(f"SMTP_PORT: expected a port number, got {env['SMTP_PORT']!r}")
        smtp_raw["port"] = int(env["SMTP_PORT"])
        smtp_where = "SMTP_HOST/SMTP_PORT" if env.get("SMTP_HOST") else "SMTP_PORT"
    smtp = _typed(SmtpSettings, smtp_raw, f"{shown(cfg)} [smtp]")
    engine = _typed(EngineSettings, dict(raw.get("engine", {})), f"{shown(cfg)} [engine]")
    if not 0 <= engine.max_ssh_keys <= 32:  # the wire's bound (pvekvm.sshkeys.MAX_KEYS)
        raise ConfigError(f"{shown(cfg)} [engine] max_ssh_keys: must be 0..32, "
                          f"got {engine.max_ssh_keys}")
    key_file = env.get("PVEKVM_SECRET_KEY_FILE") or raw.get("secrets", {}).get(
        "key_file", "var/secret.key")
    key_where = ("PVEKVM_SECRET_KEY_FILE" if env.get("PVEKVM_SECRET_KEY_FILE")
                 else f"{shown(cfg)} [secrets] key_file")
    templates = raw.get("mail", {}).get("templates_dir", str(ROOT / "config" / "mail"))
    for value, where in ((key_file, "[secrets] key_file"), (templates, "[mail] templates_dir")):
        if not isinstance(value, str):
            raise ConfigError(f"{shown(cfg)} {where}: expected a path, got {value!r}")
    api, api_note = _api_settings(raw.get("api", {}), cfg)
    try:
        webhooks = webhook_config.parse(raw.get("webhooks"), raw.get("webhook_delivery"),
                                        shown(cfg), {name for name, _ in api.tokens})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Settings(
        database_url=db, amqp_url=amqp, namespace=namespace, proxmox=proxmox, smtp=smtp,
        engine=engine, secret_key_file=key_file, templates_dir=templates,
        metrics=_metrics(raw.get("observability", {}), cfg),
        api=api, rdns=_rdns(raw.get("rdns", {}), cfg), webhooks=webhooks,
        console=_console(raw.get("console", {}), cfg), placement=placement,
        clusters=clusters, default_cluster=default_cluster,
        origin={"file": shown(cfg), "database": db_where, "amqp": amqp_where,
                "proxmox": pve_where, "smtp": smtp_where,
                **({"api_note": api_note} if api_note else {}),
                "secret_key_file": key_where})


def _console(raw: dict[str, Any], cfg: Path) -> ConsoleSettings:
    where = f"{shown(cfg)} [console]"
    console = _typed(ConsoleSettings, dict(raw), where)
    for key in ("token_ttl_s", "idle_timeout_s", "max_session_s", "check_interval_s"):
        if getattr(console, key) <= 0:
            raise ConfigError(f"{where} {key}: expected a positive number, got "
                              f"{getattr(console, key)}")
    if console.sessions_per_service < 0:
        raise ConfigError(f"{where} sessions_per_service: expected 0 (no limit) or more, got "
                          f"{console.sessions_per_service}")
    if bool(console.tls_cert) != bool(console.tls_key):
        raise ConfigError(f"{where}: set both tls_cert and tls_key (or neither: TLS in front)")
    if console.public_url and not console.public_url.startswith(("https://", "http://")):
        raise ConfigError(f"{where} public_url: expected https://host[:port], got "
                          f"{console.public_url!r}")
    for source in console.frame_ancestors:
        if source not in ("'self'", "'none'") and not _FRAME_ORIGIN.fullmatch(source):
            raise ConfigError(f"{where} frame_ancestors: expected 'self', 'none' or origins "
                              f"like https://billing.example.net, got {source[:100]!r}")
    if "'none'" in console.frame_ancestors and len(console.frame_ancestors) > 1:
        raise ConfigError(f"{where} frame_ancestors: 'none' stands alone")
    return console


# an origin for CSP frame-ancestors: scheme, host (or *.host), optional port; nothing that
# could end the header's directive (; , space, quotes)
_FRAME_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
                           r"(?::[0-9]{1,5})?")


def _rdns(raw: dict[str, Any], cfg: Path) -> RdnsSettings:
    where = f"{shown(cfg)} [rdns]"
    rdns = _typed(RdnsSettings, dict(raw), where)
    try:
        rdns.nameservers()
    except ValueError as exc:
        raise ConfigError(f"{where} resolver: expected \"ip[:port], ...\": {exc}") from None
    for key in ("changes_per_hour", "timeout_s"):
        if getattr(rdns, key) < 0:
            raise ConfigError(f"{where} {key}: must not be negative")
    return rdns


def _metrics(raw: dict[str, Any], cfg: Path) -> MetricsSettings:
    values = dict(raw)
    where = {k: f"{shown(cfg)} [observability] {k}" for k in ("port", "scheduler_port",
                                                              "addr", "log_format")}
    for var, key in (("PVEKVM_METRICS_PORT", "port"), ("PVEKVM_LOG_FORMAT", "log_format")):
        if os.environ.get(var):
            values[key], where[key] = os.environ[var], var
    for key in ("port", "scheduler_port"):
        v = values.get(key)
        if isinstance(v, str) and v.isdigit():
            v = values[key] = int(v)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                              or not 0 <= v <= 65535):
            raise ConfigError(f"{where[key]}: expected a port number (0 = any free), got {v!r}")
    if not isinstance(values.get("addr", ""), str):
        raise ConfigError(f"{where['addr']}: expected an address, got {values['addr']!r}")
    if values.get("log_format", "text") not in ("text", "json"):
        raise ConfigError(f"{where['log_format']}: expected 'text' or 'json', "
                          f"got {values['log_format']!r}")
    return MetricsSettings(**values)


def _api_settings(raw: dict[str, Any], cfg: Path) -> tuple[ApiSettings, str | None]:
    """``[api]`` with ``[api.tokens]`` name = "sha256:<hex>", and a note when the obsolete
    ``client_token_key`` is still set (``PVEKVM_API_CLIENT_TOKEN_KEY`` is no longer read)."""
    raw = dict(raw)
    tokens = raw.pop("tokens", {})
    if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
        raise ConfigError(f"{shown(cfg)} [api.tokens]: expected NAME = \"sha256:<hex>\" lines "
                          "(python -m pvekvm api new-token prints one)")
    note = None
    if "client_token_key" in raw:
        raw.pop("client_token_key")
        note = (f"{shown(cfg)} [api] client_token_key: no longer used and ignored: client tokens "
                "are random, stored hashed in client_tokens and end with their service; tokens "
                "derived from the key are refused; remove it")
    proxies = raw.pop("trusted_proxies", [])
    where = f"{shown(cfg)} [api] trusted_proxies"
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError(f"{where}: expected a list of addresses or networks, got {proxies!r}")
    for p in proxies:
        try:
            ipaddress.ip_network(p, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: {p!r} is not an IP address or network") from None
    scopes = _scopes(raw.pop("scopes", {}), set(tokens), f"{shown(cfg)} [api.scopes]")
    api = _typed(ApiSettings, raw, f"{shown(cfg)} [api]")
    if api.client_token_ttl_s < 60:
        raise ConfigError(f"{shown(cfg)} [api] client_token_ttl_s: expected at least 60 "
                          f"seconds, got {api.client_token_ttl_s}")
    return replace(api, tokens=tuple(sorted((str(k), v) for k, v in tokens.items())),
                   trusted_proxies=tuple(proxies), scopes=scopes), note


_RANGE = re.compile(r"(\d{1,10})(?:-(\d{1,10}))?")


def _scopes(raw: object, names: set[str], where: str
            ) -> tuple[tuple[str, tuple[tuple[int, int], ...]], ...]:
    """``NAME = ["3000-3999", "4711"]`` per billing token: inclusive service-id ranges."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected NAME = [\"first-last\", ...] lines")
    out = []
    for name, ranges in sorted(raw.items()):
        if name not in names:
            raise ConfigError(f"{where} {name}: no billing token of that name in [api.tokens]")
        if not isinstance(ranges, list) or not ranges:
            raise ConfigError(f"{where} {name}: expected a non-empty list of \"first-last\"")
        parsed = []
        for r in ranges:
            m = _RANGE.fullmatch(r) if isinstance(r, str) else None
            lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
            if not 1 <= lo <= hi <= MAX_SERVICE_ID:
                raise ConfigError(f"{where} {name}: {r!r} is not a service-id range "
                                  "(\"first-last\" or \"id\", "
                                  f"1 to {MAX_SERVICE_ID}, first <= last)")
            parsed.append((lo, hi))
        out.append((str(name), tuple(parsed)))
    return tuple(out)
