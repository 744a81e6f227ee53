"""A private three-node MariaDB Galera cluster for the tests (scripts/galera-cluster.sh): its
own mariadbd processes, ports and data under var/galera/; never the machine's server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from pvekvm.config import ROOT

SCRIPT = ROOT / "scripts" / "galera-cluster.sh"
PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")


def galera_port(name: str) -> int:
    """The base port of this run's cluster (node i: SQL base+i, group communication base+10+i,
    IST base+20+i, SST base+30+i): 22100 for the galera checkout, a block of forty in
    22000-22999 per other test name."""
    return 22100 if name == "pvekvm_galera" else 22000 + 40 * (zlib.crc32(name.encode()) % 25)


@dataclass
class GaleraCluster:
    name: str
    port: int
    events: list[str] = field(default_factory=list)  # what was done to it, for the report

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PVEKVM_GALERA_NAME": self.name,
                "PVEKVM_GALERA_PORT": str(self.port)}

    def _run(self, *args: str, timeout: float = 240) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"galera-cluster.sh {' '.join(args)}: "
                               f"{done.stderr[-2000:]}{done.stdout[-500:]}")
        return done.stdout

    @staticmethod
    def available() -> str | None:
        """Why a cluster cannot be made here (None when it can)."""
        for tool in ("mariadbd", "mariadb-install-db", "mariadb", "rsync"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                return f"{tool} is not installed"
        if not PROVIDER.exists():
            return f"{PROVIDER} is missing (Debian package galera-4)"
        return None

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop", timeout=300)

    def url(self, database: str) -> str:
        """Every node, in the writer order (what DATABASE_URL takes)."""
        return self._run("urls").strip().rsplit("/", 1)[0] + f"/{database}"

    def sql_port(self, i: int) -> int:
        return self.port + i

    def kill_node(self, i: int) -> None:
        self._run("kill-node", str(i))
        self.events.append(f"node {i} SIGKILLed")

    def pause_node(self, i: int) -> None:
        """SIGSTOP node i: a hang (its sockets stay open, nothing answers)."""
        self._run("pause-node", str(i))
        self.events.append(f"node {i} SIGSTOPped")

    def resume_node(self, i: int) -> None:
        """SIGCONT node i (it finds itself evicted and rejoins by IST)."""
        self._run("resume-node", str(i))
        self.events.append(f"node {i} SIGCONTed")

    def state(self, i: int) -> str:
        """Node i's wsrep_local_state_comment ('' when it does not answer)."""
        return self.status(i, "wsrep_local_state_comment").get("wsrep_local_state_comment",
                                                                "")

    def stop_node(self, i: int) -> None:
        self._run("stop-node", str(i))
        self.events.append(f"node {i} stopped")

    def start_node(self, i: int) -> None:
        self._run("start-node", str(i))
        self.events.append(f"node {i} started")

    def error_log(self, i: int) -> str:
        """Node i's error log, where the script keeps it (a checkout the mysql user cannot
        enter, such as CI's clone under a private temp directory, puts it under /var/tmp)."""
        log = Path(self._run("dir").strip()) / str(i) / "error.log"
        assert log.exists(), f"node {i} has no error log at {log}"
        return log.read_text(errors="replace")

    def query(self, i: int, sql: str, *args: object) -> list[tuple]:
        """Rows of ``sql`` on node i ([] when the node does not answer)."""
        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.sql_port(i), user="root",
                                   connect_timeout=2, read_timeout=10)
        except pymysql.err.MySQLError:
            return []
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.err.MySQLError:
            return []
        finally:
            conn.close()

    def status(self, i: int, *names: str) -> dict[str, str]:
        rows = self.query(i, "SHOW GLOBAL STATUS WHERE Variable_name IN ("
                          + ", ".join(["%s"] * len(names)) + ")", *names)
        return {str(k): str(v) for k, v in rows}

    def clients(self, database: str, nodes: tuple[int, ...] = (1, 2, 3)) -> dict[int, int]:
        """Node → how many client connections use ``database`` there (the writer rule: all on
        one node); only ``nodes`` asked (a paused node would keep the question waiting)."""
        out = {}
        for i in nodes:
            rows = self.query(i, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                              "WHERE DB = %s AND USER <> 'system user' "
                              "AND ID <> CONNECTION_ID()", database)
            if rows:
                out[i] = int(rows[0][0])
        return out

    def await_clients_on(self, node: int, database: str, timeout: float) -> float:
        """Seconds until every connection to ``database`` is on ``node`` (AssertionError with
        where they are after ``timeout``)."""
        t0 = time.monotonic()
        while True:
            where = self.clients(database)
            if where.get(node) and not any(n for i, n in where.items() if i != node):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"connections not all on node {node} after {timeout} s: "
                                     f"{where}")
            time.sleep(0.2)
