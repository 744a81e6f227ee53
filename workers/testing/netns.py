"""Worker hosts in their own network namespaces (``ip netns`` + a veth pair): a worker process
there reaches RabbitMQ, MariaDB, pvesim and SMTP only over its link. Each service port is
relayed twice by socat — on the namespace's loopback to the host end of the veth, and on the host
end to the service's loopback — so the worker's settings are the same as on the host, and a link
taken down cuts every connection of that host at once (packets dropped, no clean close), like a
pulled cable. Each host has its own hostname (UTS namespace), which step runs record."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pvekvm.config import ROOT


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "socat", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = "pvekvm_nsprobe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class WorkerHost:
    """Namespace ``{prefix}{index}`` linked to the host by veth; 10.212.<index>.1 (host end) and
    .2 (namespace end)."""

    def __init__(self, index: int, ports: list[int], prefix: str = "pvk12h") -> None:
        self.index, self.ports = index, ports
        self.ns = f"{prefix}{index}"
        self.outer, self.inner = f"{prefix}{index}a", f"{prefix}{index}b"
        self.host_ip, self.ns_ip = f"10.212.{index}.1", f"10.212.{index}.2"
        self.hostname = f"host{index}"
        self.relays: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def up(self) -> WorkerHost:
        self.down()
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns",
            self.ns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.outer)
        _ip("link", "set", self.outer, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.inner)
        _ip("-n", self.ns, "link", "set", self.inner, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        for port in self.ports:
            self.relays.append(subprocess.Popen(
                ["socat", f"TCP-LISTEN:{port},bind={self.host_ip},fork,reuseaddr",
                 f"TCP:127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
            self.relays.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "socat",
                 f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                 f"TCP:{self.host_ip}:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        return self

    def start_worker(self, config: Path, concurrency: int = 4, log: Path | None = None
                     ) -> subprocess.Popen:
        """``python -m workers`` inside the namespace, under this host's hostname."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE")}
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        cmd = (f"hostname {self.hostname} && exec {sys.executable} -m workers --config {config} "
               f"--concurrency {concurrency} --log-level WARNING")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
                                 cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def cut(self) -> None:
        """The cable pulled: every packet of this host dropped from now on."""
        _ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outer, "up")

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.terminate()
        for w in self.workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(10)
        self.workers = []

    def down(self) -> None:
        self.stop_workers()
        for r in self.relays:  # each relay with the children it forked per connection
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.pid, signal.SIGKILL)
            r.wait(10)
        self.relays = []
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def service_ports(settings) -> list[int]:
    """Every port a worker talks to: broker(s), database, Proxmox, SMTP."""
    urls = [settings.database_url, settings.proxmox.base_url,
            *settings.amqp_url.split(",")]
    ports = [urlsplit(u).port or 5672 for u in urls]
    return sorted({*ports, settings.smtp.port})
