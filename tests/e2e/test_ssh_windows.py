"""Issue 28 items 1-2 through the real path (RabbitMQ, MariaDB, pvesim, SMTP): a keys-only
deploy (PVE's encoded sshkeys, the operator's cicustom snippet, a ready mail without password,
fingerprints in the service view), new keys with a password reset, and a Windows template's
deploy, password reset and reinstall with the config PVE would hold."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from producers.api import OrderClient
from pvekvm import secrets, sshkeys
from pvekvm.catalog_cache import _catalog
from pvekvm.models import DeadLetter, Operation, Product, Service, Template
from pvesim.schema import method_info
from pvesim.vmconfig import configdrive_metadata
from tests.api.conftest import BILLING_TOKEN, api_settings
from tests.api.server import ApiServer
from workers.testing.harness import InProcessWorkers, describe_ops, wait_until

SNIPPET = "vendor=local:snippets/no-pwauth.yaml"  # '#cloud-config\nssh_pwauth: false'


def _key(private, comment: str) -> str:
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


@pytest.fixture()
def billing(settings) -> Iterator[OrderClient]:
    _catalog.clear()
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as client:
        yield client
    _catalog.clear()


def _product(name: str, **overrides: object) -> Product:
    base = Product.get(Product.name == "vps-small")
    data = {f.name: getattr(base, f.name) for f in Product._meta.sorted_fields if f.name != "id"}
    return Product.create(**{**data, "name": name, **overrides})


def _wait_op(sid: int, kind: str, count: int = 1) -> None:
    def done() -> bool:
        return Operation.select().where(
            (Operation.service_id == sid) & (Operation.kind == kind)
            & (Operation.status == "done")).count() >= count
    try:
        wait_until(done, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None


def _password(settings, sid: int) -> str:
    password_enc = Service.get_by_id(sid).password_enc
    assert password_enc is not None, f"service {sid} stores no password"
    return secrets.decrypt(settings.secret_key_file, password_enc)


def test_a_keys_only_deploy_gets_the_keys_and_mails_no_password(settings, sim, sink, billing):
    _product("keys-only", ssh_pwauth=False, cicustom=SNIPPET)
    one = _key(ed25519.Ed25519PrivateKey.generate(), "alice@laptop")
    two = _key(ec.generate_private_key(ec.SECP256R1()), "ci")
    billing.create(service_id=2801, client_id=28, product="keys-only", email="k@example.com",
                   ssh_keys=[one, two])
    _wait_op(2801, "deploy")
    svc = Service.get_by_id(2801)
    cfg = sim.vm(svc.vmid)["config"]
    assert cfg["sshkeys"] == urllib.parse.quote(f"{one}\n{two}", safe="")
    assert "%20" in cfg["sshkeys"] and cfg["cicustom"] == SNIPPET
    user = sim.proxmox().nodes(svc.node).qemu(svc.vmid).cloudinit.dump.get(type="user")
    assert f"ssh_authorized_keys:\n  - {one}\n  - {two}\n" in user
    ready = sink.wait_for(lambda m: "ready" in m.subject.lower() and "2801" in m.body, 10)
    password = _password(settings, 2801)
    assert password not in ready.body and "Password:" not in ready.body
    assert "debian" in ready.body  # the user name is still there
    _keys_only_mail(ready.body, one, two)

    with ApiServer(api_settings(settings)) as api:
        view = api.get("/v1/services/2801", BILLING_TOKEN).json()
    assert view["password_login"] is False
    assert view["ssh_keys"] == [
        {"type": "ssh-ed25519", "bits": 256, "comment": "alice@laptop",
         "fingerprint": sshkeys.parse_key(one).fingerprint},
        {"type": "ecdsa-sha2-nistp256", "bits": 256, "comment": "ci",
         "fingerprint": sshkeys.parse_key(two).fingerprint}]
    assert one.split()[1] not in str(view)  # fingerprints only, never the key

    three = _key(ed25519.Ed25519PrivateKey.generate(), "new-laptop")
    billing.reset_password(service_id=2801, ssh_keys=[three])
    _wait_op(2801, "reset_password")
    assert sim.vm(svc.vmid)["config"]["sshkeys"] == urllib.parse.quote(three, safe="")
    assert Service.get_by_id(2801).ssh_keys == three
    reset = sink.wait_for(lambda m: "2801" in m.body and "password" in m.subject.lower(), 10)
    assert _password(settings, 2801) != password  # a new one, for the console
    assert _password(settings, 2801) not in reset.body and "Password:" not in reset.body
    _keys_only_mail(reset.body, three)

    billing.reinstall(service_id=2801)
    _wait_op(2801, "reinstall")
    done = sink.wait_for(lambda m: "2801" in m.body and "reinstalled" in m.subject, 10)
    assert _password(settings, 2801) not in done.body and "Password:" not in done.body
    _keys_only_mail(done.body, three)


def _keys_only_mail(body: str, *keys: str) -> None:
    """A mail of a keys-only package: no 'change the password', the keys by fingerprint, the
    sentence saying to log in with the key."""
    assert "change the password" not in body, body
    assert "SSH password login is off: log in with your SSH key." in body, body
    for key in keys:
        parsed = sshkeys.parse_key(key)
        assert f"{parsed.fingerprint} ({parsed.comment})" in body, body
        assert parsed.blob not in body  # never the key itself


def test_each_bad_key_order_is_refused_once_with_its_reason(settings, billing):
    """Orders over RabbitMQ as billing sends them: each is parked with its reason, once, and
    no service is made."""
    _product("keys-only", ssh_pwauth=False)
    good = _key(ed25519.Ed25519PrivateKey.generate(), "ok")
    weak = _key(rsa.generate_private_key(65537, 1024), "old")
    many = [_key(ed25519.Ed25519PrivateKey.generate(), f"k{i}")
            for i in range(settings.engine.max_ssh_keys + 1)]
    cases = {
        2810: ([weak], "product", "key 1: weak: an RSA key of 1024 bits (min 2048)"),
        2811: ([good, "ssh-dss AAAAB3NzaC1kc3MAAACBAP"], "product", "key 2: key type 'ssh-dss' "
               "is not accepted"),
        2812: ([good[:-10]], "product", "key 1: malformed"),
        2813: ([f"no-pty {good}"], "product", "key 1: options before the key"),
        2814: ([good, good], "product", "key 2: the same key as key 1"),
        2815: (many, "product", f"too many keys: {len(many)} (max {settings.engine.max_ssh_keys})"),
        2816: (None, "keys-only", "allows no SSH password login: send ssh_keys"),
    }
    for sid, (keys, package, _) in cases.items():
        body = {"version": 1, "type": "create", "idempotency_key": f"bad-keys-{sid}",
                "service_id": sid, "client_id": 28, "email": "k@example.com",
                "product": "vps-small" if package == "product" else package}
        if keys is not None:
            body["ssh_keys"] = keys
        billing.publish_raw(json.dumps(body).encode(), "create", f"bad-keys-{sid}")
    wait_until(lambda: DeadLetter.select().count() >= len(cases), 30, "every order refused")
    reasons = [d.reason for d in DeadLetter.select().order_by(DeadLetter.id)]
    for _sid, (_keys, _package, reason) in cases.items():
        assert sum(reason in r for r in reasons) == 1, (reason, reasons)
    assert good.split()[1] not in " ".join(reasons)  # no reason quotes a key
    assert Service.select().where(Service.id.in_(list(cases))).count() == 0


def _windows_template(sim) -> Template:
    """A Windows template as an operator makes it (cloned, converted), with the ostype left
    at Linux: the engine must set the catalog's win11 before it sends the password."""
    px = sim.proxmox()
    upid = px.nodes("pve1").qemu(9000).clone.post(newid=9280, name="win2022", full=1)
    wait_until(lambda: px.nodes("pve1").tasks(upid).status.get()["status"] == "stopped", 10,
               "the template's clone", db=False)
    px.nodes("pve1").qemu(9280).template.post()
    _catalog.clear()
    return Template.create(name="win2022", vmid=9280, node="pve1", os_type="windows",
                           ostype="win11", os_user="Administrator")


def _assert_windows_config(sim, settings, sid: int) -> dict:
    svc = Service.get_by_id(sid)
    cfg = sim.vm(svc.vmid)["config"]
    password = _password(settings, sid)
    assert (cfg["ostype"], cfg["citype"], cfg["ciuser"]) == ("win11", "configdrive2",
                                                             "Administrator")
    info = method_info("PUT", "/nodes/{node}/qemu/{vmid}/config")
    assert info is not None, "pvesim's schema has no PUT .../config"
    schema = info["parameters"]["properties"]
    assert cfg["ostype"] in schema["ostype"]["enum"] and cfg["citype"] in schema["citype"]["enum"]
    assert cfg["cipassword"] == password  # plain: cloudbase-init sets it from admin_pass
    assert configdrive_metadata(cfg)["admin_pass"] == password
    assert svc.username == "Administrator"
    return cfg


def test_a_windows_deploy_reset_and_reinstall(settings, sim, sink, billing):
    tpl = _windows_template(sim)
    _product("win-s", template_id=tpl.id)
    billing.create(service_id=2802, client_id=28, product="win-s", email="w@example.com")
    _wait_op(2802, "deploy")
    first = _password(settings, 2802)
    _assert_windows_config(sim, settings, 2802)
    ready = sink.wait_for(lambda m: "ready" in m.subject.lower() and "2802" in m.body, 10)
    assert first in ready.body and "Administrator" in ready.body

    billing.reset_password(service_id=2802)
    _wait_op(2802, "reset_password")
    second = _password(settings, 2802)
    assert second != first
    _assert_windows_config(sim, settings, 2802)
    sink.wait_for(lambda m: "2802" in m.body and second in m.body, 10)

    vmid = Service.get_by_id(2802).vmid
    key = _key(ed25519.Ed25519PrivateKey.generate(), "admin")
    billing.reinstall(service_id=2802, ssh_keys=[key])  # cloudbase-init takes keys as well
    _wait_op(2802, "reinstall")
    assert sim.vm(vmid)["status"] == "running"
    cfg = _assert_windows_config(sim, settings, 2802)
    assert configdrive_metadata(cfg)["public_keys"] == {"key-0": key}
    assert Service.get_by_id(2802).ssh_keys == key
    reinstalled = sink.wait_for(lambda m: "2802" in m.body and "reinstall" in m.subject.lower(),
                                10)
    assert _password(settings, 2802) in reinstalled.body

    billing.reset_password(service_id=2802, ssh_keys=[])  # [] removes the keys
    _wait_op(2802, "reset_password", count=2)
    assert "sshkeys" not in _assert_windows_config(sim, settings, 2802)
    assert Service.get_by_id(2802).ssh_keys is None
