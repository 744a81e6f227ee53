"""Settings: one TOML file (``PVEKVM_CONFIG``, default ``config/pvekvm.toml``) plus environment
overrides for what differs per machine (``DATABASE_URL``, ``AMQP_URL``, ``PVEKVM_NAMESPACE``,
``PVE_CONNECTION_FILE``, ``SMTP_HOST``, ``SMTP_PORT``, ``PVEKVM_METRICS_PORT``,
``PVEKVM_LOG_FORMAT``)."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """Where Proxmox answers: a pvesim-style connection file, or the same keys inline."""

    base_url: str
    token_id: str
    token_secret: str
    ca_bundle: str | bool = True

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        hostport = self.base_url.split("://", 1)[-1].split("/", 1)[0]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 8006

    @classmethod
    def from_connection(cls, data: dict[str, Any]) -> ProxmoxSettings:
        return cls(
            base_url=data["base_url"],
            token_id=data["token_id"],
            token_secret=data["token_secret"],
            ca_bundle=data.get("ca_bundle", True),
        )


@dataclass(frozen=True)
class EngineSettings:
    vmid_min: int = 1000
    vmid_max: int = 899999
    clones_per_storage: int = 2
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
    # a task is looked at after these waits, then every last one; long tasks are seen ≤ 2 s late
    poll_delays_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 5.0)
    catalog_cache_s: float = 10.0  # products/templates are re-read at most this often
    inline_task_wait_s: float = 0.1  # look at a fresh task this long before polling by message


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
    and order for any service. ``client_token_key``: HMAC key from which per-service client
    tokens are derived (empty: no client tokens); changing it revokes every client token."""

    tokens: tuple[tuple[str, str], ...] = ()
    client_token_key: str = ""
    proxmox_timeout_s: float = 3.0  # live status/graphs/console: answer fast when PVE is down


@dataclass(frozen=True)
class Settings:
    database_url: str
    amqp_url: str
    namespace: str = "pvekvm"
    proxmox: ProxmoxSettings | None = None
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    secret_key_file: str = "var/secret.key"
    templates_dir: str = str(ROOT / "config" / "mail")
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file (absent file = defaults) and apply environment overrides."""
    path = Path(path or os.environ.get("PVEKVM_CONFIG") or DEFAULT_CONFIG)
    raw: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    env = os.environ
    db = env.get("DATABASE_URL") or raw.get("database", {}).get("url")
    amqp = env.get("AMQP_URL") or raw.get("amqp", {}).get("url")
    if not db or not amqp:
        raise RuntimeError("DATABASE_URL and AMQP_URL must be set (environment or config file)")
    namespace = env.get("PVEKVM_NAMESPACE") or raw.get("amqp", {}).get("namespace", "pvekvm")
    pve_raw = dict(raw.get("proxmox", {}))
    conn_file = env.get("PVE_CONNECTION_FILE") or pve_raw.pop("connection_file", None)
    proxmox = None
    if conn_file and Path(conn_file).exists():
        proxmox = ProxmoxSettings.from_connection(json.loads(Path(conn_file).read_text()))
    elif pve_raw:
        proxmox = ProxmoxSettings(**pve_raw)
    smtp_raw = dict(raw.get("smtp", {}))
    if env.get("SMTP_HOST"):
        smtp_raw["host"] = env["SMTP_HOST"]
    if env.get("SMTP_PORT"):
        smtp_raw["port"] = int(env["SMTP_PORT"])
    engine_raw = dict(raw.get("engine", {}))
    if "poll_delays_s" in engine_raw:
        engine_raw["poll_delays_s"] = tuple(engine_raw["poll_delays_s"])
    return Settings(
        database_url=db,
        amqp_url=amqp,
        namespace=namespace,
        proxmox=proxmox,
        smtp=SmtpSettings(**smtp_raw),
        engine=EngineSettings(**engine_raw),
        secret_key_file=env.get("PVEKVM_SECRET_KEY_FILE")
        or raw.get("secrets", {}).get("key_file", "var/secret.key"),
        templates_dir=raw.get("mail", {}).get("templates_dir", str(ROOT / "config" / "mail")),
        metrics=_metrics(raw.get("observability", {}), env),
        api=_api_settings(raw.get("api", {})),
    )


def _metrics(raw: dict[str, Any], env: Mapping[str, str]) -> MetricsSettings:
    values = dict(raw)
    if env.get("PVEKVM_METRICS_PORT"):
        values["port"] = int(env["PVEKVM_METRICS_PORT"])
    if env.get("PVEKVM_LOG_FORMAT"):
        values["log_format"] = env["PVEKVM_LOG_FORMAT"]
    settings = MetricsSettings(**values)
    if settings.log_format not in ("text", "json"):
        raise RuntimeError(f"observability.log_format must be 'text' or 'json', "
                           f"not {settings.log_format!r}")
    return settings


def _api_settings(raw: dict[str, Any]) -> ApiSettings:
    """``[api]`` with ``[api.tokens]`` name = "sha256:<hex>"; ``PVEKVM_API_CLIENT_TOKEN_KEY``
    overrides the client token key."""
    raw = dict(raw)
    tokens = tuple(sorted((str(k), str(v)) for k, v in raw.pop("tokens", {}).items()))
    key = os.environ.get("PVEKVM_API_CLIENT_TOKEN_KEY") or raw.pop("client_token_key", "")
    raw.pop("client_token_key", None)
    return ApiSettings(tokens=tokens, client_token_key=key, **raw)
