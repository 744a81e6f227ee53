"""A private three-node RabbitMQ cluster for the scale tests (scripts/rabbitmq-cluster.sh):
its own node names and ports, data under var/; never the system broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from pvekvm.config import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"


@dataclass
class Cluster:
    name: str
    vhost: str
    port: int = 5713

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PVEKVM_CLUSTER_NAME": self.name,
                "PVEKVM_CLUSTER_VHOST": self.vhost, "PVEKVM_CLUSTER_PORT": str(self.port)}

    def _run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"rabbitmq-cluster.sh {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    @staticmethod
    def available() -> str | None:
        """Why a cluster cannot be made here (None when it can)."""
        for tool in ("rabbitmq-server", "rabbitmqctl"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        return None

    def start(self) -> None:
        self._run("start")

    @property
    def urls(self) -> str:
        """Every node's AMQP URL, comma-separated (what AMQP_URL takes)."""
        return self._run("urls").strip()

    def node(self, i: int) -> str:
        return f"{self.name}_{i}@localhost"

    def stop_node(self, i: int) -> None:
        self._run("stop-node", str(i), timeout=120)

    def start_node(self, i: int) -> None:
        self._run("start-node", str(i))

    def stop(self) -> None:
        self._run("stop", timeout=180)

    def queues(self, via: int, prefix: str) -> list[dict]:
        """name, leader, members and depth of the vhost's queues whose name starts with
        ``prefix``, as node ``via`` sees them."""
        out = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node(via), "list_queues", "-p", self.vhost, "name",
             "type", "leader", "members", "messages", "--formatter", "json"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        return [q for q in json.loads(out) if q["name"].startswith(prefix)]
