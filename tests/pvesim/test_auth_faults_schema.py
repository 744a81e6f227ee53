"""Authentication, fault injection, schema coverage and the CLI."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from proxmoxer.core import ResourceException

from pvesim.routes import ROUTES

from .conftest import wait_until

SHARED_SCHEMA = Path("/work/shared/pve-api/pve-api-schema.json")


def _index(nodes, out):
    for n in nodes:
        out[n["path"]] = n.get("info", {})
        _index(n.get("children", []), out)
    return out


def test_ticket_auth_and_csrf(sim):
    c = sim.connection
    px = sim.proxmox_ticket()
    assert {n["node"] for n in px.nodes.get()} == {"pve1", "pve2", "pve3"}
    px.nodes("pve1").qemu(9001).config.put(description="via ticket")  # sends CSRF header
    r = requests.post(f"{c['base_url']}/access/ticket", verify=c["ca_bundle"],
                      data={"username": "root@pam", "password": c["password"]})
    ticket = r.json()["data"]["ticket"]
    url = f"{c['base_url']}/nodes/pve1/qemu/9001/config"
    r = requests.put(url, verify=c["ca_bundle"], cookies={"PVEAuthCookie": ticket},
                     data={"description": "no csrf"})
    assert r.status_code == 401 and r.reason == "Permission denied - invalid csrf token"
    assert requests.get(url, verify=c["ca_bundle"],
                        cookies={"PVEAuthCookie": ticket}).status_code == 200
    r = requests.post(f"{c['base_url']}/access/ticket", verify=c["ca_bundle"],
                      data={"username": "root@pam", "password": "wrong"})
    assert r.status_code == 401 and r.reason == "authentication failure"


def test_unauthenticated_and_bad_token(sim):
    c = sim.connection
    r = requests.get(f"{c['base_url']}/nodes", verify=c["ca_bundle"])
    assert r.status_code == 401 and r.reason == "No ticket"
    r = requests.get(f"{c['base_url']}/nodes", verify=c["ca_bundle"],
                     headers={"Authorization": f"PVEAPIToken={c['token_id']}=nope"})
    assert r.status_code == 401 and r.reason == "Authentication failed!"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{c['base_url']}/version", verify=True)


def test_error_rate_fault_and_reset(sim, px):
    c = sim.connection
    r = requests.put(f"{c['control_url']}/faults", verify=c["ca_bundle"],
                     json={"error_rate": 1.0})
    assert r.status_code == 200 and r.json()["data"]["error_rate"] == 1.0
    with pytest.raises(ResourceException) as e:
        px.nodes("pve1").qemu(9000).config.get()
    assert e.value.status_code >= 500
    # writes fail before mutating anything
    with pytest.raises(ResourceException):
        px.nodes("pve1").qemu(9000).config.put(description="never")
    # tickets are not affected unless apply_to_ticket is set
    assert sim.proxmox_ticket() is not None
    requests.post(f"{c['control_url']}/reset", verify=c["ca_bundle"], json={})
    assert px.nodes("pve1").qemu(9000).config.get().get("description") != "never"


def test_down_node_answers_595(sim, px):
    sim.set_faults(down_nodes=["pve3"])
    with pytest.raises(ResourceException) as e:
        px.nodes("pve3").qemu.get()
    assert e.value.status_code == 595 and e.value.content == "No route to host"
    assert px.nodes("pve1").qemu.get()
    assert {n["node"]: n["status"] for n in px.nodes.get()}["pve3"] == "offline"
    sim.set_faults()


def test_status_400_right_after_dispatch(sim, px):
    sim.set_faults(status_400_after_dispatch=200)
    upid = px.nodes("pve1").qemu(9000).clone.post(newid=401)
    with pytest.raises(ResourceException) as e:
        px.nodes("pve1").tasks(upid).status.get()
    assert e.value.status_code == 400 and e.value.errors == {"upid": "no such task"}
    st = wait_until(lambda: _status_or_none(px, upid))
    assert st["exitstatus"] == "OK"
    sim.set_faults()


def _status_or_none(px, upid):
    try:
        st = px.nodes("pve1").tasks(upid).status.get()
    except ResourceException:
        return None
    return st if st["status"] == "stopped" else None


def test_served_routes_exist_in_schema():
    packaged = Path(__file__).parents[2] / "pvesim" / "data" / "pve-api-schema.json.gz"
    schemas = [json.loads(gzip.decompress(packaged.read_bytes()))]
    if SHARED_SCHEMA.exists():
        schemas.append(json.loads(SHARED_SCHEMA.read_text()))
    for schema in schemas:
        idx = _index(schema, {})
        missing = [(m, t) for (m, t) in ROUTES if m not in idx.get(t, {})]
        assert not missing, missing
    assert len(ROUTES) > 60


def test_cli_starts_writes_connection_file_and_stops(tmp_path):
    conn_file = tmp_path / "conn.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvesim", "--port", "0", "--state-dir", str(tmp_path / "st"),
         "--task-time-scale", "0", "--connection-file", str(conn_file)],
        env=env, stderr=subprocess.PIPE)
    try:
        wait_until(conn_file.exists, timeout=15)
        conn = json.loads(conn_file.read_text())
        assert conn["port"] > 0 and conn["token_id"] == "root@pam!pvekvm"
        assert conn["templates"]["debian-12-cloud"] == {"vmid": 9000, "node": "pve1",
                                                        "storage": "local-lvm"}

        def answers():
            try:
                return requests.get(f"{conn['base_url']}/version", verify=conn["ca_bundle"],
                                    headers={"Authorization": f"PVEAPIToken={conn['token_id']}"
                                             f"={conn['token_secret']}"}, timeout=2).ok
            except requests.ConnectionError:
                return False

        assert wait_until(answers, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert (tmp_path / "st" / "pvesim-state.json").exists()
