"""Guarantee 2: every step is idempotent. Each deploy step runs twice in a row against pvesim;
the second run changes nothing in Proxmox or in the database."""

from __future__ import annotations

from producers.events import CreateEvent
from pvekvm.models import Email, IpAddress, Operation, Service
from pvekvm.proxmox import client
from steps.context import StepContext
from steps.machine import Done, Retry, Wait
from steps.machines import DEPLOY, MACHINES
from workers.intake import handle_order
from workers.testing.harness import wait_until


def _run(settings, op: Operation, step) -> Done:
    """Run ``step`` until it is Done, letting its tasks finish as the engine would."""
    after_task = False
    pve = client(settings.proxmox)
    for _ in range(20):
        ctx = StepContext(settings, op, Service.get_by_id(op.service_id), pve,
                          after_task=after_task)
        result = step(ctx)
        if isinstance(result, Done):
            return result
        if isinstance(result, Wait):
            def task_ended(r: Wait = result) -> bool:
                return not pve.task_status(r.node, r.upid).running
            wait_until(task_ended, 10, "task")
            assert pve.task_status(result.node, result.upid).ok
            after_task = True
        else:
            assert isinstance(result, Retry)
    raise AssertionError(f"{step.__name__} never finished")


def _state(sim, sid: int) -> tuple:
    svc = Service.get_by_id(sid)
    vm = sim.vm(svc.vmid) if svc.vmid else None
    config = {k: v for k, v in (vm or {}).get("config", {}).items() if k != "digest"}
    ips = sorted(a.address for a in IpAddress.select().where(IpAddress.service_id == sid))
    return (svc.vmid, svc.node, svc.macaddr, svc.username, bytes(svc.password_enc or b"") != b"",
            config, (vm or {}).get("status"), (vm or {}).get("firewall"), ips,
            Email.select().count(), len(sim.sim.cluster.vms))


def test_every_deploy_step_run_twice_is_the_same_as_once(settings, sim, sink):
    outcome = handle_order(CreateEvent(service_id=9100, client_id=4, product="vps-large",
                                       email="i@example.com", ipv6=True).to_json())
    assert outcome.dead_reason is None
    op = Operation.get(Operation.service_id == 9100)
    assert MACHINES[op.kind] is DEPLOY
    for t in DEPLOY.transitions:
        _run(settings, op, t.run)
        once = _state(sim, 9100)
        again = _run(settings, op, t.run)
        assert _state(sim, 9100) == once, f"{t.label}: the second run changed something"
        assert again.skipped, f"{t.label}: a second run should find nothing to do ({again})"
    assert sim.vm(Service.get_by_id(9100).vmid)["status"] == "running"
    assert len(sink.messages) == 2  # welcome + ready, each once
