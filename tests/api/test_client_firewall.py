"""The client's own firewall rules through the real path: ``POST /v1/events`` (RabbitMQ),
intake and the workers (MariaDB), pvesim's VM firewall (rules checked as pve-firewall checks
them, packets decided in the order its chains are built); read back with
``GET /v1/services/{id}/firewall-rules``. No client rule can open spoofing: the ipfilter IPSet
is evaluated before any rule."""

from __future__ import annotations

import json

from pvekvm.models import DeadLetter, IpAddress, Operation, Service
from pvesim import fwrules
from tests.api.conftest import BILLING_TOKEN, SID_A, SID_B, ApiEnv
from workers.testing.harness import describe_ops, wait_until

TOKEN = BILLING_TOKEN
FOREIGN = "203.0.113.99"  # an address the VM does not hold


def _order(api_env: ApiEnv, key: str, rules: object, sid: int = SID_A) -> str:
    r = api_env.api.post("/v1/events", TOKEN, json={
        "version": 1, "type": "firewall_rules_set", "idempotency_key": key,
        "service_id": sid, "rules": rules})
    assert r.status_code == 202, r.text
    return key


def _done(key: str) -> Operation:
    def done() -> Operation | None:
        return Operation.get_or_none((Operation.idempotency_key == key)
                                     & (Operation.status == "done"))
    try:
        return wait_until(done, 60, "firewall_rules_set done")
    except AssertionError:
        raise AssertionError(describe_ops([SID_A])) from None


def _dead(key: str) -> DeadLetter | None:
    """The dead letter of the order with idempotency key ``key`` (intake's refusal)."""
    return next((d for d in DeadLetter.select().order_by(DeadLetter.id.desc())
                 if json.loads(bytes(d.body)).get("idempotency_key") == key), None)


def _fw(api_env: ApiEnv) -> dict:
    vmid = Service.get_by_id(SID_A).vmid
    assert vmid is not None
    vm = api_env.sim.vm(vmid)
    assert vm is not None
    return vm["firewall"]


def test_rules_are_set_after_anti_spoofing_read_back_and_replaced_as_one_set(api_env: ApiEnv):
    own = IpAddress.get((IpAddress.service_id == SID_A) & (IpAddress.version == 4)).address
    rules = [{"direction": "out", "action": "ACCEPT", "source": "0.0.0.0/0",
              "comment": "let me send from anywhere"},
             {"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22,8000:8100",
              "source": "198.51.100.0/24"},
             {"direction": "in", "action": "DROP", "proto": "tcp", "dport": "22"}]
    op = _done(_order(api_env, "fw-set-1", rules))
    fw = _fw(api_env)
    assert [r["comment"] for r in fw["rules"]] == [
        "pvekvm-client: let me send from anywhere", "pvekvm-client", "pvekvm-client"]
    assert fw["options"]["ipfilter"] == "1"
    # the client's ACCEPT of any source does not let the VM spoof: ipfilter drops it first
    assert fwrules.verdict(fw, "out", src=FOREIGN, dst="192.0.2.200") == "DROP"
    assert fwrules.verdict(fw, "out", src=own, dst="192.0.2.200") == "ACCEPT"
    assert fwrules.verdict(fw, "in", src="198.51.100.7", dst=own, dport=22) == "ACCEPT"
    assert fwrules.verdict(fw, "in", src="192.0.2.50", dst=own, dport=22) == "DROP"

    for token in (TOKEN, api_env.client_token(SID_A)):  # the client reads its own rules
        view = api_env.api.get(f"/v1/services/{SID_A}/firewall-rules", token).json()
        assert view["rules"][0] == {"direction": "out", "action": "ACCEPT", "enable": True,
                                    "source": "0.0.0.0/0", "proto": None, "dport": None,
                                    "sport": None, "dest": None, "icmp_type": None,
                                    "comment": "let me send from anywhere"}
        assert (len(view["rules"]), view["applied"], view["allowed"], view["pending"]) == \
            (3, 3, 20, False)
    assert api_env.api.get(f"/v1/services/{SID_A}/firewall-rules",
                           api_env.client_token(SID_B)).status_code == 404  # not B's to read

    # an operator's own rule (no mark) stays first and untouched; the new set replaces the old
    api_env.sim.proxmox().nodes(Service.get_by_id(SID_A).node).qemu(
        Service.get_by_id(SID_A).vmid).firewall.rules.post(
        type="in", action="ACCEPT", proto="tcp", dport="9100", comment="operator: monitoring")
    new = [{"direction": "in", "action": "REJECT", "proto": "udp", "dport": "53"}]
    _done(_order(api_env, "fw-set-2", new))
    fw = _fw(api_env)
    assert [(r["comment"], r.get("dport")) for r in fw["rules"]] == [
        ("operator: monitoring", "9100"), ("pvekvm-client", "53")]
    again = _done(_order(api_env, "fw-set-3", new))  # the same set again: nothing to do
    assert again.id != op.id and _fw(api_env)["rules"] == fw["rules"]
    _done(_order(api_env, "fw-set-4", []))  # empty: the client has no rules
    assert [r["comment"] for r in _fw(api_env)["rules"]] == ["operator: monitoring"]
    assert api_env.api.get(f"/v1/services/{SID_A}/firewall-rules", TOKEN).json()["rules"] == []


def test_bad_rule_sets_are_refused_with_their_reason(api_env: ApiEnv):
    def refused(rules: object) -> str:
        r = api_env.api.post("/v1/events", TOKEN, json={
            "version": 1, "type": "firewall_rules_set", "idempotency_key": "fw-bad",
            "service_id": SID_A, "rules": rules})
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    big = {"version": 1, "type": "firewall_rules_set", "idempotency_key": "fw-big",
           "service_id": SID_A, "rules": [{"direction": "in", "action": "ACCEPT",
                                           "comment": "x" * 1_000_000}]}
    r = api_env.api.post("/v1/events", TOKEN, data=json.dumps(big).encode())
    assert r.status_code == 422 and "too large: over 65536 bytes" in r.json()["detail"]
    assert "too many rules: 10000 (max 100)" in refused([{}] * 10_000)
    assert "rule 1: source: not an IP address or CIDR network" in refused(
        [{"direction": "in", "action": "ACCEPT", "source": "192.0.2.300/24"}])
    assert "rule 1: dport: invalid port '70000'" in refused(
        [{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "70000"}])

    # over the package's cap (vps-small: 20): intake refuses, nothing reaches the VM
    before = _fw(api_env)["rules"]
    _order(api_env, "fw-too-many", [{"direction": "in", "action": "DROP"}] * 21)
    dead = wait_until(lambda: _dead("fw-too-many"), 30, "the refusal")
    assert dead.reason == "too many firewall rules: 21 (the package allows 20)"
    assert dead.source == "intake" and _fw(api_env)["rules"] == before
    # a suspended service takes no rules either
    _order(api_env, "fw-suspended", [{"direction": "in", "action": "DROP"}], sid=SID_B)
    dead = wait_until(lambda: _dead("fw-suspended"), 30, "the suspended refusal")
    assert dead.reason.startswith(f"service {SID_B} is suspended")
