"""The WHMCS module's buyer actions (issue 28): rescue on/off, reinstall from the OS picker
(the templates the product offers) or from an ISO, SSH keys at order, reinstall and password
reset, the client's firewall rules (read and set), host name and mail language. Each module
function is called by PHP with the ``$params`` WHMCS passes against a running pvekvm (the API
over HTTP, the workers on RabbitMQ and MariaDB, pvesim), with rescue mode configured and
packages that allow client firewall rules; a refused action answers the engine's reason and
orders nothing. One stack for this file; the tests run in order on one service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pvekvm import sshkeys
from pvekvm.models import ClientFirewallRules, Operation, Service, Template
from tests.whmcs import test_webhook_receiver as hooks
from tests.whmcs.conftest import whmcs_stack
from tests.whmcs.phpcall import Whmcs
from tests.whmcs.test_webhook_receiver import Receiver, engine_event
from workers.testing.harness import (
    describe_ops,
    wait_until,
)

TOKEN = "whmcs-buyer-" + uuid.uuid4().hex
SID, CLIENT = 7401, 41
RESCUE = "systemrescue-11.02-amd64.iso"
FW_RULES = 3  # the packages' client_fw_rules here
receiver = hooks.receiver  # the receiver under php -S, on this file's stack (fixture)


def openssh(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


KEY_A = openssh(ed25519.Ed25519PrivateKey.generate()) + " ada@laptop"
KEY_B = openssh(ed25519.Ed25519PrivateKey.generate()) + " ada@desk"
WEAK = openssh(rsa.generate_private_key(65537, 1024))


@pytest.fixture(scope="module")
def whmcs(tmp_path_factory, amqp_url, database_url, database) -> Iterator[Whmcs]:
    """As tests/whmcs/conftest.py's stack, with ``[engine] rescue_iso`` set and packages that
    allow FW_RULES client firewall rules."""
    with whmcs_stack(tmp_path_factory.mktemp("whmcs-buyer"), amqp_url, database_url, database,
                     TOKEN, rescue_iso=f"iso:iso/{RESCUE}", client_fw_rules=FW_RULES) as stack:
        yield stack


def ops(action: str) -> list[Operation]:
    return list(Operation.select().where(
        (Operation.service_id == SID)
        & Operation.idempotency_key.startswith(f"whmcs:{SID}:{action}:")).order_by(Operation.id))


def wait_done(action: str, count: int = 1) -> Operation:
    def done() -> Operation | None:
        found = ops(action)
        if len(found) >= count and found[count - 1].status in ("done", "failed"):
            return found[count - 1]
        return None
    try:
        op: Operation = wait_until(done, 60, f"{action} of {SID} finished")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None
    assert op.status == "done", (op.kind, op.error)
    return op


def svc() -> Service:
    return Service.get_by_id(SID)


def params(whmcs: Whmcs, **over) -> dict:
    return whmcs.params(SID, CLIENT, **over)


def test_the_buttons_and_forms_are_offered(whmcs: Whmcs):
    admin, client = whmcs.call("AdminCustomButtonArray"), whmcs.call("ClientAreaCustomButtonArray")
    for buttons in (admin, client):
        assert (buttons["Rescue on"], buttons["Rescue off"]) == ("rescueOn", "rescueOff")
    assert {"reinstall", "reinstallIso", "rescueOn", "rescueOff", "firewallRulesSet",
            "hostnameChange", "languageChange", "resetPassword"} <= set(
        whmcs.call("ClientAreaAllowedFunctions"))


def test_ssh_keys_at_order_a_weak_key_is_refused_with_the_engines_reason(whmcs: Whmcs):
    weak = params(whmcs, customfields={"SSH Public Keys": f"{KEY_A}\n{WEAK}\n"})
    assert whmcs.call("CreateAccount", weak) == \
        "field 'ssh_keys': key 2: weak: an RSA key of 1024 bits (min 2048)"
    assert ops("create") == []  # refused by the API: nothing ordered
    # the order form's OS picker: a Template option the product does not offer
    assert whmcs.call("CreateAccount", params(whmcs, configoptions={"Template": "almalinux-9"})) \
        == "template 'almalinux-9' is not offered by product 'vps-small' " \
        "(offered: debian-12, ubuntu-2204)"
    assert ops("create") == []
    assert whmcs.call("CreateAccount", params(
        whmcs, customfields={"SSH Public Keys": f"\r\n{KEY_A}\r\n"})) == "success"
    wait_done("create")
    assert svc().status == "ready" and svc().ssh_keys == KEY_A


def test_the_client_area_shows_the_os_picker_keys_and_firewall(whmcs: Whmcs):
    html = whmcs.render(params(whmcs))
    # vps-small offers debian-12 (installed now) and ubuntu-2204, not almalinux-9
    assert '<option value="debian-12" selected>debian-12 (debian, user debian) · installed now' \
        in html
    assert '<option value="ubuntu-2204">' in html and "almalinux-9" not in html
    assert sshkeys.parse_key(KEY_A).fingerprint in html and "ada@laptop" in html
    assert "Boot the rescue system" in html and "Leave rescue mode" not in html
    assert f"Save the rules (at most {FW_RULES})" in html and "no rules of your own" in html
    assert 'name="a" value="reinstallIso"' in html and 'name="a" value="languageChange"' in html


def test_reinstall_to_a_template_the_product_does_not_offer_is_refused(whmcs: Whmcs):
    p = params(whmcs)
    assert whmcs.call("reinstall", p, post={"pvekvm_template": "almalinux-9"}) == (
        "template 'almalinux-9' is not offered by product 'vps-small' "
        "(offered: debian-12, ubuntu-2204)")
    assert ops("reinstall") == []
    assert whmcs.call("reinstall", p, post={"pvekvm_template": "ubuntu-2204",
                                            "pvekvm_ssh_keys": f"{KEY_B}\n"}) == "success"
    wait_done("reinstall")
    assert Template.get_by_id(svc().template_id).name == "ubuntu-2204"
    assert svc().ssh_keys == KEY_B  # the keys sent with the reinstall replace the old ones
    cfg = whmcs.sim.vm(svc().vmid)["config"]
    assert cfg["sshkeys"] == sshkeys.pve_sshkeys([KEY_B])
    assert whmcs.call("reinstall", p, post={"pvekvm_template": "ubuntu-2204",
                                            "pvekvm_ssh_keys": WEAK}) == \
        "field 'ssh_keys': key 1: weak: an RSA key of 1024 bits (min 2048)"


def test_password_reset_with_new_keys(whmcs: Whmcs):
    assert whmcs.call("resetPassword", params(whmcs),
                      post={"pvekvm_ssh_keys": f"{KEY_A}\n{KEY_B}"}) == "success"
    wait_done("reset_password")
    assert svc().ssh_keys == f"{KEY_A}\n{KEY_B}"
    assert whmcs.call("resetPassword", params(whmcs)) == "success"  # the button: keys kept
    wait_done("reset_password", 2)
    assert svc().ssh_keys == f"{KEY_A}\n{KEY_B}"


def test_rescue_on_and_off_each_refused_with_the_engines_reason_when_it_cannot(
        whmcs: Whmcs, receiver: Receiver):
    p = params(whmcs)
    assert whmcs.call("rescueOff", p) == f"service {SID} is not in rescue mode"
    assert whmcs.call("rescueOn", p) == "success"
    wait_done("rescue_on")
    assert svc().rescue_before is not None
    assert RESCUE in whmcs.sim.vm(svc().vmid)["config"]["ide3"]
    assert whmcs.call("rescueOn", p) == f"service {SID} is in rescue mode already"
    assert whmcs.call("reinstall", p, post={"pvekvm_template": "debian-12"}) == \
        f"service {SID} is in rescue mode: send rescue_off first"
    assert whmcs.call("reinstallIso", p, post={
        "pvekvm_iso": "Debian-12.5.0-amd64-netinst.iso"}).endswith("send rescue_off first")
    html = whmcs.render(p)
    assert "Leave rescue mode" in html and "Leave rescue mode first." in html
    assert whmcs.call("rescueOff", p) == "success"
    wait_done("rescue_off")
    assert svc().rescue_before is None and len(ops("rescue_on")) == 1
    # the engine's events, delivered to the receiver: WHMCS's activity log says so
    receiver.forget()
    for type_ in ("service.rescue_on", "service.rescue_off"):
        assert receiver.post(engine_event(SID, type_)).status_code == 200
    logged = [c["values"]["description"] for c in receiver.local_api()
              if c["command"] == "LogActivity"]
    assert logged == [f"pvekvm: service {SID}: in rescue mode (rescue_on)",
                      f"pvekvm: service {SID}: out of rescue mode (rescue_off)"]


def test_the_clients_firewall_rules_are_read_and_set(whmcs: Whmcs):
    p = params(whmcs)
    rule = {"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22",
            "source": "203.0.113.0/24", "comment": "ssh from the office"}
    assert whmcs.call("firewallRulesSet", p, post={"pvekvm_rules": "{not json"}) == \
        "field pvekvm_rules: not a JSON list of rules"
    assert whmcs.call("firewallRulesSet", p, post={
        "pvekvm_rules": json.dumps([rule] * (FW_RULES + 1))}) == \
        f"too many firewall rules: {FW_RULES + 1} (the package allows {FW_RULES})"
    bad = whmcs.call("firewallRulesSet", p, post={
        "pvekvm_rules": json.dumps([{**rule, "direction": "sideways"}])})
    assert "direction" in bad and bad != "success", bad  # the API's reason (422)
    assert ops("firewall_rules_set") == []
    assert whmcs.call("firewallRulesSet", p, post={"pvekvm_rules": json.dumps([rule])}) == \
        "success"
    wait_done("firewall_rules_set")
    saved = json.loads(ClientFirewallRules.get(ClientFirewallRules.service_id == SID).rules)
    assert [(r["dport"], r["source"]) for r in saved] == [("22", "203.0.113.0/24")]
    html = whmcs.render(p)
    assert "<td>203.0.113.0/24</td>" in html and "ssh from the office" in html
    assert "no rules of your own" not in html


def test_hostname_and_language_change(whmcs: Whmcs):
    p = params(whmcs)
    assert whmcs.call("hostnameChange", p, post={"pvekvm_hostname": "not a name!"}).startswith(
        "field pvekvm_hostname: not a host name")
    assert whmcs.call("hostnameChange", p, post={"pvekvm_hostname": "Web2.Example.NET."}) == \
        "success"
    wait_done("hostname_change")
    assert svc().hostname == "web2.example.net"
    assert whmcs.call("languageChange", p, post={"pvekvm_language": "xx"}) == \
        "field pvekvm_language: not a language pvekvm sends mail in"
    assert whmcs.call("languageChange", p, post={"pvekvm_language": "fr"}) == "success"
    wait_done("language_change")
    assert svc().language == "fr"


def test_an_iso_reinstall_then_while_suspended_only_the_language_is_taken(whmcs: Whmcs):
    p = params(whmcs)
    assert whmcs.call("reinstallIso", p, post={"pvekvm_iso": "../etc/passwd"}) == \
        "field pvekvm_iso: not an ISO file name"
    assert whmcs.call("reinstallIso", p, post={
        "pvekvm_iso": "Debian-12.5.0-amd64-netinst.iso"}) == "success"
    wait_done("reinstall_iso")
    cfg = whmcs.sim.vm(svc().vmid)["config"]
    assert cfg["ide3"] == "iso:iso/Debian-12.5.0-amd64-netinst.iso,media=cdrom"
    assert whmcs.call("SuspendAccount", p) == "success"
    wait_until(lambda: svc().status == "suspended", 60, "suspended")
    blocked = f"service {SID} is suspended: only unsuspend, terminate and package changes " \
        "are accepted"
    for function, post in (("rescueOn", None), ("hostnameChange", {"pvekvm_hostname": "x.net"}),
                           ("firewallRulesSet", {"pvekvm_rules": "[]"}),
                           ("reinstallIso", {"pvekvm_iso": "Debian-12.5.0-amd64-netinst.iso"})):
        assert whmcs.call(function, p, post=post) == blocked, function
    assert len(ops("hostname_change")) == 1 and len(ops("rescue_on")) == 1
    assert whmcs.call("languageChange", p, post={"pvekvm_language": "de"}) == "success"
    wait_done("language_change", 2)
    assert svc().language == "de"
