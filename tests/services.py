"""Where the tests find RabbitMQ, MariaDB and PowerDNS.

Default: the machine's services (``AMQP_URL`` / ``DATABASE_URL`` from the environment, as set by
scripts/test, else the local defaults; PowerDNS from ``PDNS_API_URL`` / ``PDNS_DNS_PORT``).

Containers mode (``PVEKVM_CONTAINERS=1``, set by ``scripts/test --containers``): each service is a
testcontainers container of a locally built image (``scripts/containers images``; names below,
overridable by ``PVEKVM_*_IMAGE``) on the host network, on free loopback ports, and counts as up
only once a real client connection succeeds (AMQP handshake, SQL ``SELECT 1``, PowerDNS API and a
DNS answer). Containers carry the label ``pvekvm.test=<PVEKVM_TEST_NAME>`` and are removed when
the session ends (``scripts/containers clean-tests`` removes any a killed run left behind).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOCAL_MARIADB = "mysql://root@127.0.0.1:3306"  # the machine's server; database = test name
PDNS_KEY = "pvekvm-test-key"

IMAGES = {
    "rabbitmq": os.environ.get("PVEKVM_RABBITMQ_IMAGE", "pvekvm-local/rabbitmq:management"),
    "mariadb": os.environ.get("PVEKVM_MARIADB_IMAGE", "pvekvm-local/mariadb:10.11"),
    "powerdns": os.environ.get("PVEKVM_PDNS_IMAGE", "pvekvm-local/powerdns:4.7"),
}
READY_TIMEOUT_S = 120.0


def containers_mode() -> bool:
    return os.environ.get("PVEKVM_CONTAINERS", "").lower() in ("1", "true", "yes")


def test_name() -> str:
    return os.environ.get("PVEKVM_TEST_NAME", "pvekvm_test")


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick, as for any ephemeral port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PdnsPorts:
    api: int
    dns: int


def reserve_pdns_ports() -> PdnsPorts | None:
    """Containers mode: choose PowerDNS's ports and publish them as ``PDNS_API_URL`` /
    ``PDNS_DNS_PORT`` / ``PDNS_API_KEY`` before any test module reads them (tests/conftest.py
    calls this on import). The container itself starts only if a collected test needs it."""
    if not containers_mode():
        return None
    if "PVEKVM_PDNS_PORTS" not in os.environ:
        os.environ["PVEKVM_PDNS_PORTS"] = f"{free_port()},{free_port()}"
    api, dns = (int(p) for p in os.environ["PVEKVM_PDNS_PORTS"].split(","))
    os.environ["PDNS_API_URL"] = f"http://127.0.0.1:{api}"
    os.environ["PDNS_DNS_PORT"] = str(dns)
    os.environ["PDNS_API_KEY"] = PDNS_KEY
    return PdnsPorts(api, dns)


def wait_ready(what: str, attempt: Callable[[], object], container,
               timeout: float = READY_TIMEOUT_S) -> None:
    """Poll ``attempt`` (a real client call) until it returns without raising."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            attempt()
            return
        except Exception as exc:
            container.get_wrapped_container().reload()
            status = container.get_wrapped_container().status
            if status in ("exited", "dead") or time.monotonic() > deadline:
                logs = container.get_wrapped_container().logs(tail=40).decode(errors="replace")
                raise RuntimeError(f"{what} did not become ready ({status}): {exc}\n{logs}") \
                    from exc
            time.sleep(0.25)


@contextlib.contextmanager
def _container(service: str, env: dict[str, str], command: list[str]) -> Iterator[object]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image needs a registry
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(  # with_command: its argument is typed str | list (command= str)
        IMAGES[service], env=env, network_mode="host",
        labels={"pvekvm.test": test_name(), "pvekvm.service": service}).with_command(command)
    container.start()
    try:
        yield container
    finally:
        container.stop()


@contextlib.contextmanager
def rabbitmq_container() -> Iterator[str]:
    """RabbitMQ (management on) with its own node name, Erlang port mapper and distribution port,
    so it never meets the machine's broker; yields the AMQP URL of vhost ``/``."""
    import pika

    amqp, mgmt, dist, epmd = (free_port() for _ in range(4))
    env = {
        "RABBITMQ_NODENAME": f"rabbit-{amqp}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
            f'-rabbitmq_management tcp_config [{{port,{mgmt}}},{{ip,"127.0.0.1"}}]',
    }
    url = f"amqp://guest:guest@127.0.0.1:{amqp}/%2F"
    with _container("rabbitmq", env, ["rabbitmq-server"]) as c:
        wait_ready("RabbitMQ", lambda: pika.BlockingConnection(pika.URLParameters(url)).close(), c)
        yield url


@contextlib.contextmanager
def mariadb_container(database: str) -> Iterator[str]:
    """MariaDB on a free port, root without a password; yields the URL of ``database``."""
    import pymysql

    port = free_port()

    def connect() -> None:
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()

    env = {"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD": "1"}
    command = [f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
               "--innodb-flush-log-at-trx-commit=2", "--max-connections=500"]
    with _container("mariadb", env, command) as c:
        wait_ready("MariaDB", connect, c)
        yield f"mysql://root@127.0.0.1:{port}/{database}"


@contextlib.contextmanager
def powerdns_container(ports: PdnsPorts) -> Iterator[None]:
    """PowerDNS (sqlite3 backend, API on, no caches) on the reserved ports."""
    import dns.message
    import dns.query
    import requests

    def answers() -> None:
        requests.get(f"http://127.0.0.1:{ports.api}/api/v1/servers/localhost",
                     headers={"X-API-Key": PDNS_KEY}, timeout=2).raise_for_status()
        dns.query.udp(dns.message.make_query("pvekvm.test.", "SOA"), "127.0.0.1",
                      port=ports.dns, timeout=2)

    command = [
        "--local-address=127.0.0.1", f"--local-port={ports.dns}",
        "--webserver-address=127.0.0.1", f"--webserver-port={ports.api}",
        "--webserver-allow-from=127.0.0.0/8", "--cache-ttl=0", "--negquery-cache-ttl=0",
        "--query-cache-ttl=0", "--zone-cache-refresh-interval=0", "--security-poll-suffix=",
        "--default-soa-content=ns1.pvekvm.test. hostmaster.@ 0 10800 3600 604800 3600",
    ]
    with _container("powerdns", {"PDNS_AUTH_API_KEY": PDNS_KEY}, command) as c:
        wait_ready("PowerDNS", answers, c)
        yield


@contextlib.contextmanager
def amqp_url() -> Iterator[str]:
    if containers_mode():
        with rabbitmq_container() as url:
            yield url
    else:
        yield os.environ.get("AMQP_URL", LOCAL_AMQP)


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    if containers_mode():
        with mariadb_container(test_name()) as url:
            yield url
    else:
        # without DATABASE_URL (pytest run directly, not through scripts/test): the database of
        # this test name, created when missing, so that checkouts testing side by side with
        # their own PVEKVM_TEST_NAME never empty each other's tables
        yield os.environ.get("DATABASE_URL", f"{LOCAL_MARIADB}/{test_name()}")


def engine_unavailable_reason() -> str | None:
    """Why containers mode cannot run here, or None when a Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - docker, requests or a socket: no engine
        return f"no Docker engine answers ({exc}); scripts/containers engine starts one"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on port {port} after {timeout:.0f} s")
        time.sleep(0.2)


def _test_container(service: str):
    import docker

    labels = [f"pvekvm.test={test_name()}", f"pvekvm.service={service}"]
    found = docker.from_env().containers.list(all=True, filters={"label": labels})
    assert len(found) == 1, f"expected one {service} test container, found {len(found)}"
    return found[0]


def restart_broker(amqp: str) -> None:
    """Stop and start RabbitMQ mid-test: the test's container in containers mode, else the
    machine's broker application (``rabbitmqctl stop_app`` / ``start_app``)."""
    import subprocess
    from urllib.parse import urlparse

    if containers_mode():  # the same commands, inside the container (its node, its env)
        container = _test_container("rabbitmq")
        for command in (["rabbitmqctl", "-q", "stop_app"], ["rabbitmqctl", "-q", "start_app"]):
            code, out = container.exec_run(command)
            assert code == 0, f"{command} in the container: {out.decode(errors='replace')}"
    else:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=60)
    _wait_port(urlparse(amqp).port or 5672, "RabbitMQ")


def restart_database(database: str) -> None:
    """Shut MariaDB down mid-test and start it again: the test's container in containers mode,
    else the machine's server (mysqladmin shutdown, then start-stop-daemon)."""
    import subprocess
    from urllib.parse import urlparse

    port = urlparse(database).port or 3306
    if containers_mode():
        container = _test_container("mariadb")
        container.stop(timeout=60)
        container.start()
    else:
        subprocess.run(["mysqladmin", "-uroot", "-h127.0.0.1", f"-P{port}", "shutdown"],
                       check=True, timeout=60)
        deadline = time.monotonic() + 60
        while subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the old MariaDB server did not exit")
            time.sleep(0.2)
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                        "/usr/sbin/mariadbd"], check=True, timeout=60)
    _wait_port(port, "MariaDB")


# --- a private MariaDB server (a test may restart or kill it; the machine's stays untouched) ---

MARIADBD = "/usr/sbin/mariadbd"


def mariadbd_unavailable_reason() -> str | None:
    """Why a private ``mariadbd`` cannot be started here, or None when it can."""
    import shutil

    if not os.access(MARIADBD, os.X_OK) and shutil.which("mariadbd") is None:
        return "mariadbd is not installed"
    if shutil.which("mariadb-install-db") is None:
        return "mariadb-install-db is not installed"
    return None


class PrivateMariaDB:
    """A ``mariadbd`` of its own: datadir, port, socket and pid file under ``workdir``, root
    without a password on 127.0.0.1. ``restart`` (SIGTERM, a clean shutdown) and ``kill``
    (SIGKILL, crash recovery at the next start) act on this server only. Commits reach the
    OS at each commit (flush at trx commit = 2), so a SIGKILL of the server loses none."""

    def __init__(self, workdir, port: int | None = None) -> None:
        from pathlib import Path

        self.dir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts: list[str] = []  # "restart" / "kill", in order, for the report

    @property
    def server(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.server}/{database}"

    def _binary(self) -> str:
        import shutil

        return MARIADBD if os.access(MARIADBD, os.X_OK) else str(shutil.which("mariadbd"))

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def init(self) -> None:
        """An empty datadir with the system tables (mariadb-install-db, ~1 s)."""
        import subprocess

        data = self.dir / "data"
        if (data / "mysql").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--skip-test-db",
             "--auth-root-authentication-method=normal", *self._user()],
            capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"mariadb-install-db: {done.stdout[-1000:]}{done.stderr[-1000:]}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it answers ``SELECT 1``."""
        import subprocess

        self.init()
        log = open(self.dir / "mariadbd.log", "ab")  # noqa: SIM115 - the server's stderr
        self.proc = subprocess.Popen(
            [self._binary(), "--no-defaults", f"--datadir={self.dir / 'data'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.dir / 'sock'}",
             f"--pid-file={self.dir / 'pid'}", "--skip-name-resolve", "--skip-log-bin",
             "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=128M",
             "--max-connections=500", *self._user()],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_answers(timeout)

    def _wait_answers(self, timeout: float) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                       connect_timeout=2)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.close()
                return
            except pymysql.err.MySQLError as exc:
                if self.proc is None or self.proc.poll() is not None \
                        or time.monotonic() > deadline:
                    tail = (self.dir / "mariadbd.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"private mariadbd did not answer ({exc}):\n{tail}") \
                        from exc
                time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: a clean shutdown (connections are cut); SIGKILL after ``timeout``."""
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """Clean shutdown, then start again."""
        self.stop()
        self.restarts.append("restart")
        self.start()

    def kill(self) -> None:
        """SIGKILL (a crash), then start again (InnoDB recovers)."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.restarts.append("kill")
        self.start()


@contextlib.contextmanager
def private_mariadb(workdir) -> Iterator[PrivateMariaDB]:
    """A started PrivateMariaDB, stopped (and its datadir left for reading) on exit."""
    server = PrivateMariaDB(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
