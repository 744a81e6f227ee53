"""``python -m pvekvm check`` (one line per dependency, exit 1 when one fails), ``python -m
pvekvm config-check FILE`` (settings and catalog errors named by file and key), and pvesim's
``GET /access/permissions`` / ``PUT /access/acl`` as PVE answers them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pvekvm.config import ROOT
from pvekvm.db import latest_version
from pvekvm.preflight import REQUIRED_PRIVILEGES, broker_verdict, missing_privileges
from pvesim.access import ROLES
from pvesim.testing import RunningSimulator, running_simulator
from tests.cli_env import Shell, closed_port, make_shell, remove_shell
from tests.cli_env import verdicts as _lines
from workers.testing.smtp_sink import SmtpSink

PDNS = "http://127.0.0.1:8081/api/v1/servers/localhost/zones"
PDNS_KEY = {"X-API-Key": "pvekvm-test-key"}
ZONE, MISSING_ZONE = "t17-check.example", "t17-absent.example"


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, task_time_scale=0) as s:
        yield s


@pytest.fixture()
def shell(tmp_path, database_url, amqp_url, sim) -> Iterator[Shell]:
    sh = make_shell(tmp_path / "cwd", database_url, amqp_url, "check")
    conn = tmp_path / "connection.json"
    conn.write_text(json.dumps(sim.connection))
    sh.env["PVE_CONNECTION_FILE"] = str(conn)
    with SmtpSink() as sink:
        sh.env.update(SMTP_HOST=sink.host, SMTP_PORT=str(sink.port))
        assert sh.run("python -m pvekvm init-db").returncode == 0
        yield sh
    remove_shell(sh, amqp_url)


@pytest.fixture()
def pdns_zone() -> Iterator[str]:
    try:
        requests.delete(f"{PDNS}/{ZONE}.", headers=PDNS_KEY, timeout=5)
        r = requests.post(PDNS, headers=PDNS_KEY, timeout=5, json={
            "name": ZONE + ".", "kind": "Native", "nameservers": ["ns1.pvekvm.test."]})
    except requests.RequestException:
        pytest.skip("PowerDNS API not answering on 127.0.0.1:8081 (scripts/pdns.sh starts it)")
    assert r.status_code == 201, r.text
    yield ZONE
    requests.delete(f"{PDNS}/{ZONE}.", headers=PDNS_KEY, timeout=5)


def _catalog(shell: Shell, *zones: str) -> str:
    text = (ROOT / "config" / "catalog.toml").read_text()
    text += ('\n[[dns_providers]]\nname = "pdns"\nkind = "powerdns"\nsettings = { api_url = '
             '"http://127.0.0.1:8081", api_key = "pvekvm-test-key", server_id = "localhost" }\n')
    text += "".join(f'[[dns_zones]]\nname = "{z}"\nprovider = "pdns"\n' for z in zones)
    path = shell.cwd / "catalog.toml"
    path.write_text(text)
    return "catalog.toml"


def test_check_says_ok_per_dependency_and_fails_on_a_closed_port(shell: Shell, sim,
                                                                 pdns_zone: str) -> None:
    assert shell.run(f"python -m pvekvm load-catalog {_catalog(shell, pdns_zone)}"
                     ).returncode == 0
    out = shell.run("python -m pvekvm check")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _lines(out.stdout)
    assert lines["MariaDB"].startswith("ok ")
    assert f"schema version {latest_version()}" in lines["MariaDB"]
    assert lines["RabbitMQ"].startswith("ok ")
    assert any(k.startswith("RabbitMQ node rabbit@") and v == "ok running"
               for k, v in lines.items())
    assert lines["Proxmox"].startswith("ok PVE 8.4")
    assert [lines[f"Proxmox node pve{i}"] for i in (1, 2, 3)] == ["ok online"] * 3
    assert lines["Proxmox privileges"].startswith("ok token root@pam!pvekvm holds the 20")
    assert lines[f"DNS powerdns {pdns_zone}"].startswith("ok zone found")
    assert lines["SMTP"].startswith("ok ")
    assert out.stdout.rstrip().endswith("all dependencies answer")

    port = closed_port()
    for env, name, expected in (
            ({"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F"}, "RabbitMQ",
             f"FAIL cannot reach 127.0.0.1:{port} (AMQP_URL"),
            ({"DATABASE_URL": f"mysql://root@127.0.0.1:{port}/x"}, "MariaDB",
             f"FAIL cannot reach 127.0.0.1:{port} (DATABASE_URL"),
            ({"SMTP_PORT": str(port)}, "SMTP", f"FAIL 127.0.0.1:{port} (SMTP_HOST/SMTP_PORT)")):
        out = shell.run("python -m pvekvm check", timeout=90, **env)  # named: env is all str
        assert out.returncode == 1, out.stdout
        assert _lines(out.stdout)[name].startswith(expected), out.stdout
        assert out.stdout.rstrip().endswith("1 failed"), out.stdout

    sim.set_faults(down_nodes=["pve3"])
    assert shell.run(f"python -m pvekvm load-catalog {_catalog(shell, MISSING_ZONE)}"
                     ).returncode == 0
    out = shell.run("python -m pvekvm check")
    assert out.returncode == 1
    lines = _lines(out.stdout)
    assert lines["Proxmox node pve3"].startswith("FAIL offline")
    assert lines[f"DNS powerdns {MISSING_ZONE}"].startswith(
        "FAIL zone not found on server 'localhost'")
    assert out.stdout.rstrip().endswith("2 failed")


def test_a_broker_setting_naming_several_nodes_passes_when_one_answers(amqp_url) -> None:
    """Workers and the scheduler start against a cluster with a node down: their start-up
    check tries every comma-separated node (as messaging.connect does), and fails only when
    none answers, naming the first."""
    down = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    verdict, _ = broker_verdict(f"{down},{amqp_url}", "AMQP_URL")
    assert verdict.status == "ok", verdict.detail
    verdict, _ = broker_verdict(f"{down},{down}", "AMQP_URL")
    assert verdict.failed and verdict.detail.startswith(
        f"cannot reach 127.0.0.1:{down.split(':')[3].split('/')[0]} (AMQP_URL")


def test_check_names_the_privileges_a_token_lacks(shell: Shell, sim, tmp_path: Path) -> None:
    px = sim.proxmox()
    token = px.access.users("root@pam").token("t17ops").post(privsep=1)
    px.access.acl.put(path="/vms", roles="PVEVMUser", tokens=token["full-tokenid"])
    conn = tmp_path / "ops.json"
    conn.write_text(json.dumps({**sim.connection, "token_id": token["full-tokenid"],
                                "token_secret": token["value"]}))
    out = shell.run("python -m pvekvm check", PVE_CONNECTION_FILE=str(conn))
    assert out.returncode == 1
    line = _lines(out.stdout)["Proxmox privileges"]
    assert line.startswith("FAIL token root@pam!t17ops lacks VM.Allocate, VM.Clone, "
                           "VM.Config.Disk"), line
    assert "VM.PowerMgmt" not in line and "VM.Backup" not in line  # PVEVMUser grants those
    assert "Datastore.AllocateSpace, Datastore.Audit on /storage" in line
    out = shell.run("python -m pvekvm check", PVE_CONNECTION_FILE=str(conn),
                    PVEKVM_CONFIG=str(tmp_path / "absent.toml"))
    assert out.returncode == 2  # a named settings file that does not exist is an error
    assert "absent.toml" in out.stderr


# --- config-check ------------------------------------------------------------------------------

def test_config_check_names_file_key_and_problem(shell: Shell) -> None:
    (shell.cwd / "bad.toml").write_text(
        '[database]\nurl = "mysql://root@127.0.0.1/x"\n[amqp]\nurl = "amqp://g:g@h/v"\n'
        '[engine]\nmax_attempts = "eight"\n')
    (shell.cwd / "typo.toml").write_text('[smtp]\nhots = "mail.example.net"\n')
    (shell.cwd / "notoml.toml").write_text('[database\nurl = 1\n')
    cat = (ROOT / "config" / "catalog.toml").read_text()
    (shell.cwd / "cat.toml").write_text(
        cat.replace('cores = 4', 'cores = "four"').replace('template = "debian-12"\ncores = 2',
                                                           'template = "debian-13"\ncores = 2'))
    env = {"DATABASE_URL": "", "AMQP_URL": ""}
    outs = shell.run_all(["python -m pvekvm config-check bad.toml",
                          "python -m pvekvm config-check typo.toml",
                          "python -m pvekvm config-check notoml.toml",
                          "python -m pvekvm config-check cat.toml",
                          "python -m pvekvm config-check config/catalog.toml",
                          f"python -m pvekvm config-check {ROOT}/config/pvekvm.toml",
                          "python -m workers --config bad.toml"], timeout=90, **env)
    assert [o.returncode for o in outs] == [2, 2, 2, 2, 0, 0, 2]
    assert outs[0].stderr.strip() == ("bad.toml [engine] max_attempts: expected int, "
                                      "got 'eight'")
    assert outs[1].stderr.startswith("typo.toml: [smtp] unknown key 'hots' (known: host,")
    assert outs[2].stderr.startswith("notoml.toml: not valid TOML: ")
    assert outs[3].stderr.splitlines() == [
        "cat.toml: [[products]] #1 (vps-small) template: no [[templates]] named 'debian-13' "
        "in this file",
        "cat.toml: [[products]] #2 (vps-large) cores: expected an integer, got 'four'"]
    assert outs[4].stdout.startswith("config/catalog.toml: catalog ok (")
    assert "settings ok (database: " in outs[5].stdout
    assert outs[6].stderr.strip() == ("python -m workers: configuration error: bad.toml "
                                      "[engine] max_attempts: expected int, got 'eight'")


# --- pvesim answers /access/permissions as PVE -------------------------------------------------

def test_pvesim_permissions_like_pve(sim) -> None:
    px = sim.proxmox()
    root = px.access.permissions.get()
    # root@pam (and its token without privilege separation): every privilege, everywhere
    assert set(root) == {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn",
                         "/storage", "/vms"}
    assert root["/vms"] == dict.fromkeys(ROLES["Administrator"], 1)
    assert missing_privileges(root) == {}
    token = px.access.users("root@pam").token("t17ro").post(privsep=1)["full-tokenid"]
    assert px.access.permissions.get(userid=token) == {}  # separated, no ACL: nothing
    px.access.acl.put(path="/vms", roles="PVEVMUser", tokens=token, propagate=0)
    px.access.acl.put(path="/storage", roles="PVEDatastoreUser", tokens=token)
    perms = px.access.permissions.get(userid=token)
    assert set(perms) == {"/vms", "/storage"}
    assert perms["/vms"]["VM.PowerMgmt"] == 0 and "VM.Allocate" not in perms["/vms"]
    assert px.access.permissions.get(userid=token, path="/vms/100") == {"/vms/100": {}}
    assert px.access.permissions.get(userid=token, path="/storage/local")["/storage/local"][
        "Datastore.AllocateSpace"] == 1
    missing = missing_privileges(perms)
    assert "VM.Clone" in missing["/vms"] and "/storage" not in missing
    assert set(missing) == {"/vms", "/nodes", "/sdn"} and set(REQUIRED_PRIVILEGES) >= set(missing)
