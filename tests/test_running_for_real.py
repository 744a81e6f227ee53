"""README's "Running it for real", followed literally as subprocesses in a fresh directory with
the default settings file (config/pvekvm.toml): in order on a fresh database and vhost (the
commands parsed from README.md itself, so the two cannot drift), and with the database missing,
the broker stopped and no Proxmox configured. Every command exits as it should and says what is
missing; no output anywhere holds a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import requests

from pvekvm import db as dbmod
from pvekvm import messaging
from pvekvm.config import ROOT
from tests.cli_env import (
    Shell,
    closed_port,
    drop_database,
    make_shell,
    query,
    remove_shell,
    verdicts,
    wait_for,
)

ORDER = ("python -m producers create --service-id 5546 --client-id 77 --product vps-large "
         "--email client@example.com")


def readme_commands() -> list[str]:
    """The commands of the README section, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Running it for real", 1)[1].split("```", 2)[1]
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("python"):
            commands += [c.strip() for c in line.split("&&")]
    return [" ".join(c.split()) for c in commands]


@pytest.fixture()
def shell(tmp_path, database_url, amqp_url) -> Iterator[Shell]:
    sh = make_shell(tmp_path, database_url, amqp_url, "readme")
    yield sh
    remove_shell(sh, amqp_url)


def _namespace(shell: Shell) -> str:
    """The namespace the commands use: the environment's, else the shipped settings file's."""
    shipped = tomllib.loads((ROOT / "config" / "pvekvm.toml").read_text())["amqp"]["namespace"]
    return shell.env.get("PVEKVM_NAMESPACE", shipped)


def _consumers(shell: Shell, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(shell.amqp_url))
    try:
        return conn.channel().queue_declare(f"{_namespace(shell)}.{queue}",
                                            passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        conn.close()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).ok
    except requests.RequestException:
        return False


def _orders_waiting(shell: Shell) -> int:
    topo = messaging.Topology(_namespace(shell))
    conn = pika.BlockingConnection(pika.URLParameters(shell.amqp_url))
    try:
        return conn.channel().queue_declare(topo.orders_queue, passive=True).method.message_count
    finally:
        conn.close()


#: README's commands that exit 1 on purpose in this flow: nothing is paused
EXIT_1 = {"python -m pvekvm resume 5546": "5546: no paused operation",
          "python -m pvekvm cancel 5546": "5546: no paused operation"}
#: a refused order billing might send: a secret in a field intake does not know, non-ASCII text
REFUSED = ('{"version": 1, "type": "suspend", "service_id": 5546, "idempotency_key": "bad-1", '
           '"root_password": "hunter2-secret", "note": "caf\u00e9"}')


def test_readme_section_in_order_on_a_fresh_database_and_vhost(shell: Shell) -> None:
    """Every command of "Running it for real" as written (a background one started and waited
    for; pvesim on a free port rather than 8006, the mail sink on a private one), each exit code
    as the README says, each output free of tracebacks."""
    commands = readme_commands()
    assert commands[:2] == ["python -m pvekvm init-db",
                            "python -m pvekvm load-catalog config/catalog.toml"]
    assert "python -m pvekvm smtp-sink &" in commands and \
        "python -m pvekvm api new-token" in commands
    shell.env.update(SMTP_PORT=str(closed_port()))  # where [smtp] points: the sink's too
    for command in commands:
        if command == "python -m pvesim &":
            # the README's pvesim line: started as the README says, it writes the
            # connection file the default settings name (var/pvesim/connection.json)
            shell.start("python -m pvesim --port 0 --task-time-scale 0")
            conn_file = shell.cwd / "var" / "pvesim" / "connection.json"
            wait_for(conn_file.exists, 30, "pvesim's connection file")
            assert json.loads(conn_file.read_text())["token_id"]
            continue
        if command == "python -m pvekvm smtp-sink &":
            proc, log = shell.start(command.rstrip(" &"))
            def sink_up(p: subprocess.Popen = proc, log: Path = log) -> bool:
                return p.poll() is not None or "accepting mail on" in log.read_text()
            wait_for(sink_up, 30, "the mail sink")
            assert proc.poll() is None, log.read_text()
            continue
        if command.startswith(("python -m workers", "python -m workers.scheduler")):
            if "clone,migrate" in command:
                continue  # the alternative to --pools all, not a further step
            started(shell, command.replace("--concurrency 4", "--concurrency 2"))
            continue
        if command.startswith("python -m pvekvm api --"):
            # the service API serves until stopped: on a free port, it answers, and says that
            # the shipped settings hold no billing token yet
            port = closed_port()
            proc, log = shell.start(f"python -m pvekvm api --port {port} --workers 1")
            def api_up(p: subprocess.Popen = proc, port: int = port) -> bool:
                return p.poll() is not None or _answers(port)
            wait_for(api_up, 60, "the service API")
            assert proc.poll() is None, log.read_text()
            assert "WARNING: no billing token in [api.tokens]" in log.read_text()
            continue
        if command == "python -m producers watch":
            # billing's consumer runs until stopped: started, it binds its queue and waits
            proc, log = shell.start(command)
            def consuming(p: subprocess.Popen = proc) -> bool | int:
                return p.poll() is not None or _consumers(shell, "billing")
            wait_for(consuming, 30, "producers watch consuming")
            assert proc.poll() is None, log.read_text()
            continue
        if command == "python -m pvekvm dead-letters":
            # what billing might send wrong, so the list has one to show
            (shell.cwd / "refused.json").write_text(REFUSED)
            assert shell.run("python -m producers raw refused.json").returncode == 0
            wait_for(lambda: query(shell.database_url, "SELECT 1 FROM dead_letters"), 30,
                     "the refused order parked")
        out = shell.run(command)
        assert out.returncode == (1 if command in EXIT_1 else 0), f"{command}: {out.stderr}"
        if command in EXIT_1:
            assert out.stdout.strip() == EXIT_1[command]
        if command.startswith("python -m producers"):
            wait_for(lambda: query(shell.database_url,
                                   "SELECT 1 FROM services WHERE id = 5546 AND "
                                   "status = 'ready'"), 120, "service 5546 ready")
        if command == "python -m pvekvm init-db":
            assert f"created; schema version none -> {dbmod.latest_version()}" in out.stdout
        if command.startswith("python -m pvekvm load-catalog"):
            assert out.stdout.startswith("config/catalog.toml: loaded ") and "{" not in out.stdout
            assert " products" in out.stdout and " templates" in out.stdout
        if command.startswith("python -m pvekvm history"):
            assert "--- Deploy" in out.stdout
        if command.startswith("python -m pvekvm check"):
            assert "FAIL" not in out.stdout, out.stdout
            assert verdicts(out.stdout)["SMTP"].startswith("ok "), out.stdout
        if command == "python -m pvekvm api new-token":
            token, line = out.stdout.splitlines()[:2]
            assert token.startswith("token: ") and line.startswith(
                'settings: [api.tokens] NAME = "sha256:')
        if command == "python -m pvekvm dead-letters":
            assert "field 'root_password': unknown field" in out.stdout, out.stdout
            body = out.stdout.splitlines()[1].strip()
            assert json.loads(body)["note"] == "café" and "hunter2" not in out.stdout
            assert "b'" not in out.stdout
    # beyond the README: what did nothing says so and exits 1, as --help says
    again, history, cancel = shell.run_all(["python -m pvekvm init-db",
                                            "python -m pvekvm history 9999",
                                            "python -m pvekvm cancel --all"])
    assert again.stdout.strip().endswith("(up to date)")
    assert (history.returncode, history.stdout.strip()) == (1, "no service 9999")
    assert (cancel.returncode, cancel.stdout.strip()) == (1, "cancelled 0 paused operation(s)")
    mails = sorted((shell.cwd / "var" / "mail").glob("*.eml"))
    assert len(mails) >= 2 and all(m.stat().st_mode & 0o077 == 0 for m in mails)  # welcome,
    logs = shell.stop_all()                                                       # ready
    for command, output in logs.items():
        assert "Traceback" not in output, f"{command}:\n{output}"


def started(shell: Shell, command: str) -> Path:
    """Start a worker or the scheduler and wait until it says it serves (past its checks)."""
    proc, log = shell.start(command)
    marker = "Scheduler started" if "scheduler" in command else "serving pools"
    wait_for(lambda: proc.poll() is not None or marker in log.read_text(), 60,
             f"{command} to start")
    assert proc.poll() is None, f"{command} exited {proc.returncode}: {log.read_text()}"
    return log


def test_the_scheduler_log_is_its_jobs_summaries_not_apschedulers_chatter(shell: Shell) -> None:
    assert shell.run("python -m pvekvm init-db").returncode == 0
    (shell.cwd / "site.toml").write_text("[engine]\nstale_after_s = 3\n")  # reconcile each 1 s
    log = started(shell, "python -m workers.scheduler --config site.toml --metrics-port 0")
    wait_for(lambda: "[reconcile] Done" in log.read_text(), 30, "a reconcile run")
    shell.stop_all()
    text = log.read_text()
    assert "Running job" not in text and "executed successfully" not in text, text
    assert "Scheduler started" in text  # APScheduler's own start line (and its warnings) stay


def test_producers_help_the_token_helper_and_a_shadowing_folder_explain_themselves(
        shell: Shell, tmp_path: Path) -> None:
    """``producers --help`` lists ``watch``; ``python -m pvekvm.apps.api`` alone names the server; a
    command started beside a checkout named ``pvekvm`` says in one line why it cannot import
    pvekvm (exit 2), never an ImportError traceback."""
    beside = tmp_path / "home"
    beside.mkdir()
    (beside / "pvekvm").symlink_to(ROOT)  # a checkout named pvekvm, the command run beside it
    runs = [(shell.cwd, "producers"), (shell.cwd, "pvekvm.apps.api"), (beside, "producers"),
            (beside, "workers.scheduler")]
    procs = [subprocess.Popen([sys.executable, "-m", module, *(["--help"] if module !=
                                                                "pvekvm.apps.api" else [])],
                              cwd=cwd, env=shell.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cwd, module in runs]
    (help_out, _), (_, api_err), *shadowed = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 2, 2, 2]
    assert " watch " in help_out and "print what billing hears" in help_out
    assert api_err.strip() == ("python -m pvekvm.apps.api makes tokens (new-token, "
                               "hash-token TOKEN); "
                               "the API server is `python -m pvekvm api --port 8080`")
    for (_, module), (_, err) in zip(runs[2:], shadowed, strict=True):
        assert err.strip().splitlines() == [
            f"python -m {module}: the folder {beside / 'pvekvm'} (no __init__.py: a checkout?) "
            "hides the pvekvm package, since Python imports from the current folder first: "
            f"run from inside the checkout (cd {beside / 'pvekvm'}) or from another folder"]


def test_database_missing_every_command_says_run_init_db(shell: Shell) -> None:
    commands = ["python -m pvekvm load-catalog config/catalog.toml", "python -m pvekvm status",
                "python -m pvekvm history 5546", "python -m pvekvm resume 5546",
                "python -m pvekvm dead-letters", "python -m pvekvm pools",
                "python -m workers --pools all --concurrency 4", "python -m workers.scheduler"]
    name = shell.database_url.rsplit("/", 1)[1]
    for command, out in zip(commands, shell.run_all(commands), strict=True):
        assert out.returncode == 3, f"{command}: {out.returncode} {out.stderr}"
        assert (f"database `{name}` does not exist on 127.0.0.1:3306 (DATABASE_URL): run "
                "`python -m pvekvm init-db`") in out.stderr, f"{command}: {out.stderr}"
    out = shell.run("python -m pvekvm init-db")
    assert out.returncode == 0 and f"database `{name}` created" in out.stdout


def test_broker_stopped_every_command_names_amqp_url(shell: Shell) -> None:
    assert shell.run("python -m pvekvm init-db").returncode == 0
    port = closed_port()
    down = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    reach = f"RabbitMQ: cannot reach 127.0.0.1:{port} (AMQP_URL = amqp://guest:***@127.0.0.1:"
    commands = ["python -m workers --pools all --concurrency 4", "python -m workers.scheduler",
                "python -m pvekvm status", "python -m pvekvm resume 5546", ORDER,
                "python -m pvekvm check"]
    outs = shell.run_all(commands, AMQP_URL=down)
    for command, out in zip(commands[:4], outs[:4], strict=True):
        assert out.returncode == 3, f"{command}: {out.returncode} {out.stderr}"
        assert reach in out.stderr and "start RabbitMQ or fix the URL" in out.stderr, out.stderr
    order, check = outs[4:]
    assert order.returncode == 1
    assert order.stderr.startswith(f"publish failed: cannot reach 127.0.0.1:{port} (AMQP_URL")
    assert check.returncode == 1
    assert verdicts(check.stdout)["RabbitMQ"].startswith(f"FAIL cannot reach 127.0.0.1:{port}")


def test_no_proxmox_configured_workers_refuse_and_the_order_waits(shell: Shell) -> None:
    assert shell.run("python -m pvekvm init-db").returncode == 0
    assert shell.run("python -m pvekvm load-catalog config/catalog.toml").returncode == 0
    out = shell.run("python -m workers --pools all --concurrency 4")
    assert out.returncode == 3
    assert (f"python -m workers: cannot start: Proxmox: {ROOT}/config/pvekvm.toml [proxmox] "
            "connection_file = var/pvesim/connection.json: the file does not exist; start "
            "`python -m pvesim` (it writes it)") in out.stderr
    # billing may still queue the order; nothing accepted it, so it waits for a worker that can
    assert shell.run(ORDER).returncode == 0
    assert _orders_waiting(shell) == 1
    assert query(shell.database_url, "SELECT COUNT(*) FROM operations")[0][0] == 0
    # a worker for pools that never call Proxmox starts (and takes no order)
    started(shell, "python -m workers --pools dns --concurrency 1")
    assert _orders_waiting(shell) == 1


def test_producers_read_the_same_settings_file(shell: Shell, tmp_path: Path) -> None:
    settings = tmp_path / "site.toml"
    settings.write_text(f'[database]\nurl = "{shell.database_url}"\n'
                        f'[amqp]\nurl = "{shell.amqp_url}"\nnamespace = "site7"\n')
    env = {k: v for k, v in shell.env.items() if k not in ("AMQP_URL", "PVEKVM_NAMESPACE")}
    shell.env = {**env, "PVEKVM_CONFIG": str(settings)}
    out = shell.run(ORDER)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("published order.create message_id=")
    shell.env["PVEKVM_NAMESPACE"] = "site7"
    assert _orders_waiting(shell) == 1
    missing = tmp_path / "no-broker.toml"
    missing.write_text(f'[database]\nurl = "{shell.database_url}"\n')
    out = shell.run(ORDER, PVEKVM_CONFIG=str(missing))
    assert out.returncode == 2
    assert out.stderr.strip() == ("configuration error: no-broker.toml [amqp] url: not set; set "
                                  "AMQP_URL or url in [amqp] of no-broker.toml")


# --- init-db: creating the database, migrations in order, the version recorded ---------------

def test_init_db_without_create_privilege_prints_the_sql_to_run(shell: Shell) -> None:
    user = "pvekvm_t17_nocreate"
    query(shell.database_url.rsplit("/", 1)[0] + "/mysql",
          f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        name = shell.database_url.rsplit("/", 1)[1]
        out = shell.run("python -m pvekvm init-db",
                        DATABASE_URL=f"mysql://{user}:pw@127.0.0.1:3306/{name}")
        assert out.returncode == 3
        assert (f"as a MariaDB administrator run: CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;") in out.stderr
    finally:
        query(shell.database_url.rsplit("/", 1)[0] + "/mysql", f"DROP USER '{user}'@'%'")


def test_migrations_apply_in_order_once_and_record_the_version(shell: Shell,
                                                              tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_extra.sql").write_text(
        "CREATE TABLE t17_extra (id INT PRIMARY KEY) ENGINE=InnoDB;")
    (migrations / "0003_extra_note.sql").write_text(
        "-- needs 0002\nALTER TABLE t17_extra ADD COLUMN note VARCHAR(20) NULL;")
    dbmod.create_database(shell.database_url)
    db = dbmod.open_database(shell.database_url)
    try:
        # a database from before versions were recorded: tables, no version row
        for stmt in dbmod.schema_statements():
            db.execute_sql(stmt)
        db.execute_sql("DROP TABLE schema_version")
        assert dbmod.apply_schema(db, migrations) == 3
        rows = db.execute_sql("SELECT version, name FROM schema_version ORDER BY version")
        assert list(rows) == [(1, "baseline"), (2, "extra"), (3, "extra_note")]
        assert dbmod.apply_schema(db, migrations) == 3  # again: nothing to do, no error
        db.execute_sql("INSERT INTO t17_extra (id, note) VALUES (1, 'both ran')")
        db.execute_sql("INSERT INTO schema_version (version, name) VALUES (9, 'future')")
        with pytest.raises(dbmod.DatabaseSetupError, match="newer than this code knows"):
            dbmod.apply_schema(db, migrations)
    finally:
        db.close()
    drop_database(shell.database_url)
    dbmod.create_database(shell.database_url)
    db = dbmod.open_database(shell.database_url)
    try:  # a fresh database gets schema.sql, stamped with the newest number at once
        assert dbmod.apply_schema(db, migrations) == 3
        assert list(db.execute_sql("SELECT version FROM schema_version")) == [(3,)]
    finally:
        db.close()
