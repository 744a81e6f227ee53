"""Settings: one TOML file (``PVEKVM_CONFIG``, default ``config/pvekvm.toml``) plus environment
overrides for what differs per machine (``DATABASE_URL``, ``AMQP_URL`` — one broker URL or
several comma-separated, the nodes of a cluster — ``PVEKVM_NAMESPACE``,
``PVE_CONNECTION_FILE``, ``SMTP_HOST``, ``SMTP_PORT``)."""

from __future__ import annotations

import json
import os
import tomllib
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
    # an event for a service whose create has not arrived waits this long, then is refused
    hold_unknown_service_s: float = 120.0
    stale_after_s: float = 60.0
    # a task is looked at after these waits, then every last one; long tasks are seen ≤ 2 s late
    poll_delays_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 5.0)
    catalog_cache_s: float = 10.0  # products/templates are re-read at most this often
    inline_task_wait_s: float = 0.1  # look at a fresh task this long before polling by message


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


def _amqp_urls(section: dict[str, Any]) -> str | None:
    """``[amqp] url = "..."`` (one broker, or several comma-separated) or ``urls = [...]``
    (a cluster's nodes): one comma-separated string, as ``AMQP_URL`` takes it."""
    urls = section.get("urls")
    if urls:
        return ",".join(urls)
    return section.get("url")


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file (absent file = defaults) and apply environment overrides."""
    path = Path(path or os.environ.get("PVEKVM_CONFIG") or DEFAULT_CONFIG)
    raw: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    env = os.environ
    db = env.get("DATABASE_URL") or raw.get("database", {}).get("url")
    amqp = env.get("AMQP_URL") or _amqp_urls(raw.get("amqp", {}))
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
    )
