"""Adopting VMs made outside pvekvm, and drift, through the real path: VMs created directly in
pvesim (``POST /nodes/{node}/qemu`` with ``ipconfig0`` and a net0 MAC, as a person or the PHP
module makes them), ``python -m pvekvm adopt|drift`` (the CLI's main), MariaDB, and for the
client's actions and the fix RabbitMQ and the workers."""

from __future__ import annotations

import json

from producers.api import OrderClient
from producers.events import PowerEvent
from pvekvm.models import (
    AuditLog,
    Backup,
    DnsRecordRow,
    IpAddress,
    Operation,
    Product,
    Service,
    VmidAllocation,
)
from tests.e2e import test_dns_ownership
from workers import intake
from workers.testing.harness import InProcessWorkers, describe_ops, wait_until, write_config

SID = 6101
zone = test_dns_ownership.zone  # the fixture: a PowerDNS zone of this test's own


def _make_vm(sim, vmid: int, ip: str, *, node: str = "pve2", cores: int = 1,
             memory: int = 1024, mac: str = "BC:24:11:AD:00:01", start: bool = True,
             **extra: str) -> None:
    """A VM as an operator makes one by hand: its own disk, cloud-init user and address."""
    px = sim.proxmox()
    conf = {"name": f"legacy-{vmid}", "cores": cores, "memory": memory,
            "scsi0": "local-lvm:20", "ide2": "local-lvm:cloudinit",
            "net0": f"virtio={mac},bridge=vmbr0,tag=100,firewall=1,rate=12.5",
            "ipconfig0": f"ip={ip}/24,gw=192.0.2.1", "ciuser": "admin", **extra}
    assert sim.wait_task(px.nodes(node).qemu.post(vmid=vmid, **conf))["exitstatus"] == "OK"
    if start:
        sim.wait_task(px.nodes(node).qemu(vmid).status.start.post())


def _cli(config, capsys, *argv: str) -> tuple[int, str]:
    from pvekvm.apps.cli.main import main

    code = main(["--config", str(config), *argv])
    return code, capsys.readouterr().out


def _adopt(config, capsys, vmid: int, sid: int, *more: str, product: str = "vps-small"):
    return _cli(config, capsys, "adopt", "--vmid", str(vmid), "--service-id", str(sid),
                "--client-id", "77", "--product", product, *more)


def test_an_adopted_vm_serves_its_client_and_drift_is_fixed_by_change_package(
        settings, sim, tmp_path, capsys):
    config = write_config(settings, tmp_path / "cli.toml")
    _make_vm(sim, 3001, "192.0.2.77")
    backup = sim.proxmox().nodes("pve2").vzdump.post(vmid=3001, storage="backup")
    assert sim.wait_task(backup)["exitstatus"] == "OK"
    started = sim.vm(3001)["started"]

    code, out = _adopt(config, capsys, 3001, SID, "--email", "old@example.com")
    assert code == 0, out
    assert "VM 3001 -> sid:6101: adopted: on pve2; addresses 192.0.2.77" in out
    svc = Service.get_by_id(SID)
    assert (svc.status, svc.vmid, svc.node, svc.username, svc.macaddr, svc.client_id) == \
        ("ready", 3001, "pve2", "admin", "BC:24:11:AD:00:01", 77)
    assert VmidAllocation.get_by_id(3001).service_id == SID  # never handed out again
    assert [a.address for a in IpAddress.select().where(IpAddress.service_id == SID)] == \
        ["192.0.2.77"]
    assert [b.volid.split("/")[-1].split("-")[2] for b in
            Backup.select().where(Backup.service_id == SID)] == ["3001"]
    vm = sim.vm(3001)
    assert "pvekvm:service=6101" in vm["config"]["description"].split()
    assert (vm["status"], vm["started"]) == ("running", started)  # not restarted
    assert AuditLog.get(AuditLog.service_id == SID).event == "adopted"

    code, out = _adopt(config, capsys, 3001, SID, "--email", "old@example.com")
    assert code == 0 and "already adopted" in out and "1 backup(s)" in out

    code, out = _cli(config, capsys, "drift", str(SID))
    assert code == 1
    assert "cores: VM 1, package 2" in out and "memory: VM 1024, package 2048" in out
    assert "firewall policy_in: VM unset, package DROP" in out

    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.snapshot_create(service_id=SID, name="after_adopt")
        _wait_done("snapshot_create")
        assert "after_adopt" in sim.vm(3001)["snapshots"]

        code, out = _cli(config, capsys, "drift", "--fix")
        assert code == 0, out
        assert "change_package to vps-small accepted" in out
        _wait_done("change_package")
    cfg = sim.vm(3001)["config"]
    assert (int(cfg["cores"]), int(cfg["memory"])) == (2, 2048)
    assert "mbps_rd=200" in cfg["scsi0"] and sim.vm(3001)["status"] == "running"
    code, out = _cli(config, capsys, "drift", str(SID))
    assert code == 0 and "matches its package" in out, out
    assert IpAddress.get(IpAddress.service_id == SID).address == "192.0.2.77"  # kept


def _wait_done(kind: str) -> None:
    def done() -> bool:
        return Operation.select().where((Operation.service_id == SID) & (Operation.kind == kind)
                                        & (Operation.status == "done")).exists()
    try:
        wait_until(done, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def test_adoption_refuses_with_its_reason_and_changes_nothing(settings, sim, tmp_path, capsys):
    config = write_config(settings, tmp_path / "cli.toml")
    _make_vm(sim, 3101, "192.0.2.80", start=False)
    _make_vm(sim, 3102, "192.0.2.80", mac="BC:24:11:AD:00:02", start=False)  # the same address
    _make_vm(sim, 3103, "10.9.9.9", mac="BC:24:11:AD:00:03", start=False)
    _make_vm(sim, 3104, "192.0.2.81", mac="BC:24:11:AD:00:04", start=False)
    assert _adopt(config, capsys, 3101, 5101)[0] == 0
    refusals = {
        (3102, 5102): "address 192.0.2.80 is held by service 5101",
        (3103, 5103): "address 10.9.9.9 lies outside every IP pool",
        (9000, 5104): "VMID 9000 is a template, not a VM",
        (3999, 5105): "VMID 3999 is unknown to Proxmox",
        (3101, 5106): "VMID 3101 is already ours (given to service 5101)",
        (3104, 5101): "service id 5101 is in use (status ready, VM 3101)",
    }
    for (vmid, sid), reason in refusals.items():
        code, out = _adopt(config, capsys, vmid, sid)
        assert code == 1 and f"refused: {reason}" in out, out
    code, out = _adopt(config, capsys, 3104, 5107, product="vps-nope")
    assert code == 1 and "refused: unknown product 'vps-nope'" in out
    assert [s.id for s in Service.select()] == [5101]  # no refusal left a row behind
    assert [v.vmid for v in VmidAllocation.select()] == [3101]
    assert "pvekvm:" not in str(sim.vm(3102)["config"].get("description", ""))

    # an operation in flight (no worker runs it): drift neither compares nor fixes that VM
    accepted = intake.handle_order(PowerEvent(service_id=5101, action="start").to_json())
    assert not accepted.dead_reason
    code, out = _cli(config, capsys, "drift", "5101", "--fix")
    assert "sid:5101 VM 3101: not compared: operation" in out and "(power, running)" in out
    assert Operation.select().where(Operation.kind == "change_package").count() == 0


def test_a_mapping_file_adopts_the_good_lines_refuses_the_rest_and_runs_again(
        settings, sim, tmp_path, capsys):
    config = write_config(settings, tmp_path / "cli.toml")
    _make_vm(sim, 3201, "192.0.2.90", start=False)
    _make_vm(sim, 3202, "192.0.2.90", mac="BC:24:11:AD:00:12", start=False)
    _make_vm(sim, 3203, "192.0.2.91", mac="BC:24:11:AD:00:13", start=False)
    _make_vm(sim, 3204, "192.0.2.92", mac="BC:24:11:AD:00:14", node="pve3", start=False)
    mapping = tmp_path / "node.csv"
    mapping.write_text(
        "vmid,service_id,client_id,product,node,email\n"
        "3201,5201,70,vps-small,pve2,a@example.com\n"
        "3202,5202,71,vps-small,pve2,b@example.com\n"  # 192.0.2.90 is 5201's by then
        "3203,5203,72,vps-small,,c@example.com\n"
        "3203,5204,73,vps-small,,d@example.com\n"  # the same VMID twice
        "abc,5205,74,vps-small,,\n"
        "3204,5206,75,vps-small,pve2,\n")  # it is on pve3
    code, out = _cli(config, capsys, "adopt", "--from", str(mapping))
    assert code == 1
    assert "line 2: VM 3201 -> sid:5201: adopted" in out
    assert "line 3: VM 3202 -> sid:5202: refused: address 192.0.2.90 is held by service 5201" \
        in out
    assert "VMID 3203 is named 2 times (line 4, line 5): none of them adopted" in out
    assert "line 6: refused: vmid: 'abc' is not a valid id" in out
    assert [ln.split(":")[0] for ln in out.splitlines()[:6]] == [f"line {n}" for n in range(2, 8)]
    assert "line 7: VM 3204 -> sid:5206: refused: VM 3204 is on node pve3, not pve2" in out
    assert out.rstrip().endswith("1 adopted, 0 already adopted, 5 refused")
    before = (Service.select().count(), IpAddress.select().where(
        IpAddress.service_id.is_null(False)).count())

    code, out = _cli(config, capsys, "adopt", "--from", str(mapping))
    assert code == 1 and out.rstrip().endswith("0 adopted, 1 already adopted, 5 refused")
    assert (Service.select().count(), IpAddress.select().where(
        IpAddress.service_id.is_null(False)).count()) == before == (1, 1)

    as_json = tmp_path / "more.json"
    as_json.write_text(json.dumps([{"vmid": 3204, "service_id": 5206, "client_id": 75,
                                    "product": "vps-small", "email": "e@example.com"}]))
    code, out = _cli(config, capsys, "adopt", "--from", str(as_json))
    assert code == 0 and "entry 1: VM 3204 -> sid:5206: adopted: on pve3" in out
    assert "places VMs on pve2: a package change (drift --fix) moves it there" in out
    code, out = _cli(config, capsys, "drift", "5206")
    assert code == 1 and "node: VM on pve3, package pve2" in out
    assert Product.get_by_id(Service.get_by_id(5206).product_id).name == "vps-small"


def test_an_adopted_vm_gets_its_dns_and_no_one_elses_name(settings, sim, zone, tmp_path,
                                                           capsys):
    from tests.dns.dnsfakes import PDNS_API_URL
    test_dns_ownership._use_powerdns(settings, zone, PDNS_API_URL)
    config = write_config(settings, tmp_path / "cli.toml")
    _make_vm(sim, 3301, "192.0.2.95", start=False)
    _make_vm(sim, 3302, "192.0.2.96", mac="BC:24:11:AD:00:22", start=False)
    host = f"legacy.{zone}"
    code, out = _adopt(config, capsys, 3301, 5301, "--hostname", host)
    assert code == 0, out
    rows = DnsRecordRow.select().where(DnsRecordRow.service_id == 5301)
    assert {(r.name, r.type, r.content, bool(r.synced)) for r in rows if r.type == "A"} == \
        {(host, "A", "192.0.2.95", True)}
    code, out = _adopt(config, capsys, 3302, 5302, "--hostname", host.upper())
    assert code == 1 and f"refused: hostname {host!r} is held by live service 5301" in out
    assert not DnsRecordRow.select().where(DnsRecordRow.service_id == 5302).exists()


def test_an_adopted_vm_brings_its_cloud_init_keys_and_a_weak_one_is_reported(
        settings, sim, tmp_path, capsys):
    """PVE stores cloud-init ``sshkeys`` URL-encoded, one key a line: adoption records the good
    ones (the service view shows their fingerprints) and names each key it does not record."""
    import urllib.parse

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from pvekvm import sshkeys

    def openssh(private) -> str:
        return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()

    good = openssh(ed25519.Ed25519PrivateKey.generate()) + " ada@laptop"
    weak = openssh(rsa.generate_private_key(65537, 1024))  # PVE takes it; create refuses it
    config = write_config(settings, tmp_path / "cli.toml")
    _make_vm(sim, 3401, "192.0.2.97", start=False,
             sshkeys=urllib.parse.quote(f"{good}\n{weak}\n", safe=""))
    code, out = _adopt(config, capsys, 3401, 5401)
    assert code == 0, out
    assert "1 SSH key(s); SSH key 2 of the VM not recorded: weak: an RSA key of 1024 bits " \
        "(min 2048)" in out
    assert weak.split()[1] not in out  # a key is named by position, never quoted
    svc = Service.get_by_id(5401)
    assert svc.ssh_keys == good
    view = sshkeys.views(svc.ssh_keys)  # what GET /v1/services/{id} shows
    assert [(v["type"], v["comment"]) for v in view] == [("ssh-ed25519", "ada@laptop")]
    assert view[0]["fingerprint"] == sshkeys.parse_key(good).fingerprint
    assert "not recorded: weak" in AuditLog.get(AuditLog.service_id == 5401).detail

    _make_vm(sim, 3402, "192.0.2.98", mac="BC:24:11:AD:00:32", start=False)  # no keys
    code, out = _adopt(config, capsys, 3402, 5402)
    assert code == 0 and "0 SSH key(s)" in out and Service.get_by_id(5402).ssh_keys is None
