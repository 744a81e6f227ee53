"""One order through the whole engine: real RabbitMQ, MariaDB, pvesim and SMTP."""

from __future__ import annotations

from producers.api import OrderClient
from pvekvm import secrets
from pvekvm.models import IpAddress, Service, StepRun
from workers import admin
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until


def test_one_order_becomes_a_running_vm_with_every_package_value(settings, sim, sink):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=5546, client_id=77, product="vps-large",
                       email="client@example.com", ipv6=True)
        wait_until(all_ready([5546]), 60, "service 5546 ready")

    svc = Service.get_by_id(5546)
    assert svc.hostname == "srv-77-5546.vps.example.net"
    vm = sim.vm(svc.vmid)
    assert vm is not None and vm["node"] == "pve3" == svc.node
    cfg = sim.proxmox().nodes(svc.node).qemu(svc.vmid).config.get()
    assert (int(cfg["cores"]), int(cfg["memory"])) == (4, 8192)
    assert "size=80G" in cfg["scsi0"] and "mbps_rd=400" in cfg["scsi0"]
    assert cfg["scsi0"].startswith("local-lvm:") and "mbps_wr=200" in cfg["scsi0"]
    assert "size=100G" in cfg["scsi1"] and "mbps_rd=100" in cfg["scsi1"]
    net = cfg["net0"]
    assert "bridge=vmbr0" in net and "tag=200" in net and "rate=125" in net
    assert svc.macaddr and svc.macaddr.lower() in net.lower()
    v4 = IpAddress.get((IpAddress.service_id == 5546) & (IpAddress.version == 4)).address
    v6 = IpAddress.get((IpAddress.service_id == 5546) & (IpAddress.version == 6)).address
    assert cfg["ipconfig0"] == f"ip={v4}/24,gw=192.0.2.1,ip6={v6}/64,gw6=2001:db8:100::1"
    assert cfg["ciuser"] == "debian"
    assert "cloudinit" in cfg["ide2"]  # the cloud-init drive survives the migration
    assert f"hostname: {svc.hostname.split('.')[0]}" in sim.proxmox().nodes(svc.node).qemu(
        svc.vmid).cloudinit.dump.get(type="user")
    ipset = vm["firewall"]["ipsets"]["ipfilter-net0"]
    assert {e["cidr"].split("/")[0] for e in ipset["entries"]} == {v4, v6}
    assert vm["status"] == "running"

    assert svc.password_enc is not None
    password = secrets.decrypt(settings.secret_key_file, svc.password_enc)
    assert password.encode() not in bytes(svc.password_enc)
    welcome = sink.wait_for(lambda m: "5546" in m.body and "creat" in m.subject.lower(), 5)
    ready = sink.wait_for(lambda m: "ready" in m.subject.lower(), 5)
    assert welcome.rcpt_tos == ["client@example.com"]
    assert v4 in ready.body and password in ready.body and "debian" in ready.body

    runs = list(StepRun.select().where(StepRun.service_id == 5546).order_by(StepRun.id))
    assert [r.to_state for r in runs if r.result in ("success", "skip")][-1] == "ready"
    block = admin.history(5546)
    assert block.startswith(f"--- Deploy: service=5546 vm={svc.vmid} status=new ---")
    assert "(clone -> migrated)" in block and "Migrate to target node" in block
    assert block.rstrip().endswith("--- Deploy complete: service=5546 status=ready ---"), \
        describe_ops([5546])
