"""Running pvekvm's commands as a user types them: subprocesses in a fresh working directory
(a copy of config/catalog.toml, the default settings file), against a fresh database and
RabbitMQ vhost named after the test database (``<name>_<suffix>``)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlparse

import pymysql
import requests

from pvekvm.config import ROOT

#: environment a user's shell would not have: the tests' own settings
SCRUBBED = ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE", "PVEKVM_CONFIG", "PVE_CONNECTION_FILE",
            "SMTP_HOST", "SMTP_PORT", "PVEKVM_SECRET_KEY_FILE")


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


T = TypeVar("T")


def wait_for(cond: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def _mysql(url: str, database: str | None = None) -> pymysql.Connection:
    u = urlparse(url)
    return pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306,
                           user=u.username or "root", password=u.password or "",
                           database=database, autocommit=True)


def drop_database(url: str) -> None:
    conn = _mysql(url)
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{urlparse(url).path.lstrip('/')}`")
    finally:
        conn.close()


def query(url: str, sql: str, *args: object) -> list[tuple]:
    conn = _mysql(url, urlparse(url).path.lstrip("/"))
    try:
        cur = conn.cursor()
        cur.execute(sql, args or None)
        return list(cur.fetchall())
    finally:
        conn.close()


def _management(amqp_url: str) -> tuple[str, tuple[str, str]]:
    u = urlparse(amqp_url)
    return f"http://{u.hostname or '127.0.0.1'}:15672/api", (u.username or "guest",
                                                             u.password or "guest")


def fresh_vhost(amqp_url: str, vhost: str) -> str | None:
    """Create an empty vhost through the management API; its URL, or None when that API does
    not answer (the caller then uses a private namespace on the tests' vhost)."""
    api, auth = _management(amqp_url)
    try:
        requests.delete(f"{api}/vhosts/{quote(vhost, safe='')}", auth=auth, timeout=10)
        requests.put(f"{api}/vhosts/{quote(vhost, safe='')}", auth=auth, timeout=10,
                     json={}).raise_for_status()
        requests.put(f"{api}/permissions/{quote(vhost, safe='')}/{auth[0]}", auth=auth,
                     timeout=10, json={"configure": ".*", "write": ".*", "read": ".*"}
                     ).raise_for_status()
    except requests.RequestException:
        return None
    return urlparse(amqp_url)._replace(path="/" + quote(vhost, safe="")).geturl()


def delete_vhost(amqp_url: str, vhost: str) -> None:
    api, auth = _management(amqp_url)
    requests.delete(f"{api}/vhosts/{quote(vhost, safe='')}", auth=auth, timeout=10)


@dataclass
class Shell:
    """A user's shell: working directory, environment, and the processes started from it."""

    cwd: Path
    env: dict[str, str]
    database_url: str
    amqp_url: str
    procs: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)

    def argv(self, command: str) -> list[str]:
        args = shlex.split(command)
        return [sys.executable if args[0] == "python" else args[0], *args[1:]]

    def run(self, command: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
        """Run ``command`` as typed (``python`` = this interpreter); output must hold no
        traceback whatever the exit code."""
        out = subprocess.run(self.argv(command), cwd=self.cwd, env={**self.env, **env},
                             capture_output=True, text=True, timeout=timeout, check=False)
        assert "Traceback" not in out.stdout + out.stderr, f"{command}:\n{out.stderr}"
        return out

    def run_all(self, commands: list[str], timeout: float = 90,
                **env: str) -> list[subprocess.CompletedProcess]:
        """Several commands at once (each as :meth:`run`), results in order."""
        started = [(c, subprocess.Popen(self.argv(c), cwd=self.cwd, env={**self.env, **env},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)) for c in commands]
        results = []
        for command, proc in started:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert "Traceback" not in stdout + stderr, f"{command}:\n{stderr}"
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                                       stderr))
        return results

    def start(self, command: str, **env: str) -> tuple[subprocess.Popen, Path]:
        """A long-running command in the background; the process and its log file."""
        log = self.cwd / f"log-{len(self.procs)}.txt"
        proc = subprocess.Popen(self.argv(command), cwd=self.cwd, env={**self.env, **env},
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.procs.append((command, proc, log))
        return proc, log

    def stop_all(self) -> dict[str, str]:
        """SIGTERM every background process, wait, and return each one's output."""
        logs = {}
        for command, proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            logs[command] = log.read_text(errors="replace")
        self.procs.clear()
        return logs


def make_shell(tmp_path: Path, database_url: str, amqp_url: str, suffix: str) -> Shell:
    """A fresh directory holding config/catalog.toml, a dropped database ``<db>_<suffix>``, a
    fresh vhost of that name, and an environment naming only those two."""
    name = f"{urlparse(database_url).path.lstrip('/')}_{suffix}"
    db_url = urlparse(database_url)._replace(path="/" + name).geturl()
    drop_database(db_url)
    vhost_url = fresh_vhost(amqp_url, name)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(DATABASE_URL=db_url, AMQP_URL=vhost_url or amqp_url, PYTHONUNBUFFERED="1")
    if vhost_url is None:
        env["PVEKVM_NAMESPACE"] = name
    (tmp_path / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "catalog.toml", tmp_path / "config" / "catalog.toml")
    return Shell(cwd=tmp_path, env=env, database_url=db_url, amqp_url=env["AMQP_URL"])


def remove_shell(shell: Shell, amqp_url: str) -> None:
    shell.stop_all()
    drop_database(shell.database_url)
    if shell.amqp_url != amqp_url:
        delete_vhost(amqp_url, urlparse(shell.database_url).path.lstrip("/"))


def verdicts(stdout: str) -> dict[str, str]:
    """``python -m pvekvm check`` lines ('ok    Name    detail') as {name: 'ok detail'}."""
    out = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "FAIL", "skip"):
            name, _, detail = rest.strip().partition("  ")
            out[name.strip()] = f"{status.strip()} {detail.strip()}".strip()
    return out
