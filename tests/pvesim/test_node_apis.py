"""pvesim serves one cluster on every node's API (one listener per node, one state), takes a
node's API down and back, runs two clusters side by side, and models pveproxy/pvedaemon's
worker limits, the 30 s proxy timeout and the 10 s VM config lock (pvesim/limits.py)."""

from __future__ import annotations

import socket
import threading

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvesim.testing import RunningSimulator, running_simulator
from tests.pvesim.conftest import wait_until


def _api(sim: RunningSimulator, node: str) -> ProxmoxAPI:
    c = sim.connection
    port = int(c["node_endpoints"][node].rsplit(":", 1)[1].split("/", 1)[0])
    return ProxmoxAPI(c["host"], port=port, user=c["user"], token_name=c["token_name"],
                      token_value=c["token_secret"], verify_ssl=c["ca_bundle"], timeout=10)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_every_node_serves_the_one_cluster_and_a_node_api_goes_down_and_back(tmp_path):
    with running_simulator(tmp_path, per_node_api=True) as sim:
        c = sim.connection
        assert list(c["node_endpoints"]) == ["pve1", "pve2", "pve3"]
        assert c["endpoints"][0] == c["base_url"] and len(set(c["endpoints"])) == 3
        pve1, pve2 = _api(sim, "pve1"), _api(sim, "pve2")
        upid = pve2.nodes("pve1").qemu(9000).clone.post(newid=301, name="via-pve2", full=1)
        sim.wait_task(upid)
        assert pve1.nodes("pve1").qemu(301).config.get()["name"] == "via-pve2"  # one state
        port1 = int(c["node_endpoints"]["pve1"].rsplit(":", 1)[1].split("/")[0])
        kept = pve1.version.get()  # a kept-alive connection is cut too
        assert kept["version"]
        sim.set_api("pve1", False)
        assert _refused(port1)
        with pytest.raises(Exception):  # noqa: B017 - refused or reset, either way cut
            pve1.version.get()
        # the node runs on: calls for it through another node's API still work
        assert pve2.nodes("pve1").qemu(301).status.current.get()["status"] == "stopped"
        sim.set_api("pve1", True)
        assert _api(sim, "pve1").nodes("pve1").qemu(301).config.get()["name"] == "via-pve2"


def test_two_clusters_run_at_once_on_two_state_dirs(tmp_path):
    with running_simulator(tmp_path, state_name="east", per_node_api=True) as east, \
            running_simulator(tmp_path, state_name="west", nodes=["pve1", "pve9"]) as west:
        assert east.sim.state_dir != west.sim.state_dir and east.sim.port != west.sim.port
        px_east = east.proxmox()
        east.wait_task(px_east.nodes("pve1").qemu(9000).clone.post(newid=401, name="e", full=1))
        assert east.vm(401) is not None and west.vm(401) is None
        assert sorted(n["node"] for n in west.proxmox().nodes.get()) == ["pve1", "pve9"]
        assert east.sim.auth.tokens != west.sim.auth.tokens  # each its own secrets


def test_a_request_beyond_the_daemon_workers_waits_and_past_the_proxy_timeout_is_596_but_runs(
        tmp_path):
    limits = {"daemon_workers": 1, "api_time_ms": 250, "proxy_timeout_s": 0.4}
    with running_simulator(tmp_path, limits=limits) as sim:
        answers: dict[int, object] = {}

        def clone(newid: int) -> None:
            try:
                answers[newid] = sim.proxmox().nodes("pve1").qemu(9000).clone.post(
                    newid=newid, name=f"c{newid}", full=1)
            except ResourceException as exc:
                answers[newid] = exc.status_code

        threads = []
        for newid, busy in ((501, "most_in_flight"), (502, "most_waiting")):
            threads.append(threading.Thread(target=clone, args=(newid,)))
            threads[-1].start()
            wait_until(lambda busy=busy: sim.limit_stats()[busy] >= 1, 5)
        clone(503)  # waits behind two 250 ms handlers on the one worker: past 0.4 s
        for t in threads:
            t.join(5)
        assert str(answers[501]).startswith("UPID:")  # in time
        assert answers[503] == 596
        # pvedaemon had both late requests: they are carried out though nobody waits for them
        wait_until(lambda: all(sim.vm(v) is not None for v in (501, 502, 503)), 5)
        stats = sim.limit_stats()
        assert stats["proxy_timeouts"] >= 1 and stats["late_runs"] >= 1


def test_the_vm_config_lock_is_waited_for_then_times_out_with_pves_message(tmp_path):
    with running_simulator(tmp_path, limits={"lock_wait_s": 0.2}) as sim:
        px = sim.proxmox()
        sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=601, name="x", full=1))
        sim.hold_lock(601, 0.6)
        with pytest.raises(ResourceException) as exc:
            px.nodes("pve1").qemu(601).config.put(cores=2)
        assert exc.value.status_code == 500
        assert "can't lock file '/var/lock/qemu-server/lock-601.conf' - got timeout" in str(
            exc.value)
        def configured() -> bool:
            try:
                px.nodes("pve1").qemu(601).config.put(cores=2)
            except ResourceException:
                return False
            return True
        wait_until(configured, 3)  # once the other holder is done
        vm = sim.vm(601)
        assert vm is not None and str(vm["config"]["cores"]) == "2"
        assert sim.limit_stats()["lock_timeouts"] >= 1
