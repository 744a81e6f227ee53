"""The client's SSH keys as orders carry them: each refusal with its reason (never quoting the
key), the canonical form stored, the fingerprint ssh-keygen shows, PVE's encoding; the engine's
bound and keys-only packages at intake; the catalog's login and Windows rules."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pvekvm import catalog, secrets, sshkeys
from pvekvm.catalog_check import validate
from pvekvm.config import ROOT, EngineSettings
from pvekvm.models import Operation, Product, Service
from pvekvm.wire.orders import CreateEvent, InvalidEvent, parse_event
from workers.intake import handle_order


def openssh(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


ED25519 = openssh(ed25519.Ed25519PrivateKey.generate())
RSA2048 = openssh(rsa.generate_private_key(65537, 2048))
P521 = openssh(ec.generate_private_key(ec.SECP521R1()))
CREATE = {"version": 1, "type": "create", "idempotency_key": "k-1", "service_id": 41,
          "client_id": 4, "product": "vps-small", "email": "c@example.com"}


def _reason(keys: object) -> str:
    with pytest.raises(InvalidEvent) as err:
        parse_event(json.dumps({**CREATE, "ssh_keys": keys}))
    return err.value.reason


def test_accepted_keys_are_kept_in_their_canonical_form():
    event = parse_event(json.dumps({**CREATE, "ssh_keys": [
        f"  {ED25519} alice@laptop ", RSA2048, P521 + " ci key"]}))
    assert isinstance(event, CreateEvent) and event.ssh_keys is not None
    assert event.ssh_keys == (f"{ED25519} alice@laptop", RSA2048, f"{P521} ci key")
    assert [k.bits for k in sshkeys.parse_keys(list(event.ssh_keys))] == [256, 2048, 521]


_RSA1024 = openssh(rsa.generate_private_key(65537, 1024))
_DSA = "ssh-dss " + base64.b64encode(b"\0\0\0\7ssh-dss" + bytes(40)).decode()
_BLOB = ED25519.split()[1]


@pytest.mark.parametrize(("keys", "reason"), [
    ([_RSA1024], "key 1: weak: an RSA key of 1024 bits (min 2048)"),
    ([ED25519, _DSA], "key 2: key type 'ssh-dss' is not accepted"),
    ([f'command="/bin/sh" {ED25519}'], "key 1: options before the key"),
    ([f"no-pty {ED25519}"], "key 1: options before the key (authorized_keys' no-pty, "
                            "command=...) are not accepted: send the key line only"),
    (["Ключ AAAA"], "key 1: not an OpenSSH public key line: an unknown key type (use one of "),
    ([ED25519[:-4]], "key 1: malformed: the key data is not a valid ssh-ed25519 key"),
    ([f"ssh-rsa {_BLOB}"], "key 1: malformed: the key data is not a ssh-rsa key"),
    ([f"ssh-ed25519 {_BLOB[:20]}!!"], "key 1: malformed: the key data is not base64"),
    (["ssh-ed25519"], "key 1: not an OpenSSH public key line"),
    ([f"{ED25519}\n{RSA2048}"], "key 1: not an OpenSSH public key line"),
    ([ED25519, ED25519 + " again"], "key 2: the same key as key 1"),
    ([f"{ED25519} a: b"], "key 1: comment must be at most 100 characters"),
    (["ssh-ed25519 " + "A" * 5000], "key 1: too long: 5012 characters (max 4096)"),
    (["-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjE="],
     "key 1: this is a private key: send the public key (the .pub file) only"),
    ([ED25519] * 33, "too many keys: 33 (max 32)"),
    ([7], "key 1: expected string, got integer 7"),
    ("ssh-ed25519 AAAA", "expected array, got string of 16 characters"),
])
def test_a_bad_key_is_refused_with_its_reason_and_without_its_text(keys, reason):
    got = _reason(keys)
    assert got.startswith(f"field 'ssh_keys': {reason}"), got
    assert _BLOB not in got and "PRIVATE" not in got.replace("private key", "")


def test_the_fingerprint_is_what_ssh_keygen_shows(tmp_path):
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("no ssh-keygen on this machine")
    for line in (ED25519, RSA2048, P521):
        (tmp_path / "k.pub").write_text(line + "\n")
        shown = subprocess.run([keygen, "-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")],
                               capture_output=True, text=True, check=True).stdout.split()
        key = sshkeys.parse_key(line)
        assert (int(shown[0]), shown[1]) == (key.bits, key.fingerprint)


def test_pve_gets_the_keys_percent_encoded_with_spaces_as_percent_20():
    value = sshkeys.pve_sshkeys([f"{ED25519} a@b", RSA2048])
    assert set(value) <= set("-%_.!~*'()" + "abcdefghijklmnopqrstuvwxyz".upper()
                             + "abcdefghijklmnopqrstuvwxyz0123456789")  # PVE's urlencoded
    assert "%20" in value and "+" not in value and "%0A" in value
    assert urllib.parse.unquote(value) == f"{ED25519} a@b\n{RSA2048}"


@pytest.fixture()
def catalog_db(clean_db, tmp_path):
    from pvekvm.catalog_cache import _catalog

    key = str(tmp_path / "secret.key")
    secrets.create_key(key)
    _catalog.clear()
    catalog.load_file(ROOT / "config" / "catalog.toml", key)
    yield
    _catalog.clear()


def _order(body: dict, engine: EngineSettings | None = None) -> str | None:
    return handle_order(json.dumps(body).encode(), engine or EngineSettings()).dead_reason


def test_intake_holds_orders_to_the_engines_bound_and_keys_only_packages_to_keys(catalog_db):
    engine = EngineSettings(max_ssh_keys=2)
    assert _order({**CREATE, "ssh_keys": [ED25519, RSA2048, P521]}, engine) == \
        "field 'ssh_keys': too many keys: 3 (max 2)"
    Product.update(ssh_pwauth=False).where(Product.name == "vps-small").execute()
    assert _order(CREATE) == ("the package vps-small allows no SSH password login: send "
                              "ssh_keys (the client's public keys)")
    assert _order({**CREATE, "ssh_keys": [ED25519]}, engine) is None
    assert Service.get_by_id(41).ssh_keys == ED25519
    # a reset with [] would leave the client no way in; one with new keys waits in the params
    reset = {"version": 1, "type": "reset_password", "idempotency_key": "k-2",
             "service_id": 41, "ssh_keys": []}
    assert "allows no SSH password login" in str(_order(reset))
    assert _order({**reset, "idempotency_key": "k-3", "ssh_keys": [RSA2048]}) is None
    op = Operation.get(Operation.idempotency_key == "k-3")
    assert json.loads(op.params) == {"service": {"ssh_keys": RSA2048}}
    assert Service.get_by_id(41).ssh_keys == ED25519  # until the reset is done


TEMPLATE = {"name": "win", "vmid": 9100, "node": "pve1", "os_type": "windows",
            "ostype": "win11"}
PRODUCT = {"name": "p", "template": "win", "cores": 1, "memory_mb": 512, "disk_gb": 10,
           "target_node": "pve1", "target_storage": "local-lvm"}


@pytest.mark.parametrize(("template", "product", "reason"), [
    ({"ostype": "l26"}, {}, "a Windows template needs a Windows ostype"),
    ({"ostype": None}, {}, "a Windows template needs a Windows ostype"),
    ({"os_type": "linux"}, {}, "ostype win11 is Windows: set os_type = \"windows\""),
    ({"os_type": "bsd"}, {}, "os_type must be one of linux, windows"),
    ({"ostype": "win12"}, {}, "ostype must be one of PVE's"),
    ({}, {"ssh_pwauth": False}, "ssh_pwauth = false needs a Linux template"),
    ({}, {"cicustom": "user=local:snippets/u.yaml"}, "cicustom user= replaces the user-data"),
    ({}, {"cicustom": "vendor=/etc/passwd"}, "cicustom must be PVE's"),
])
def test_the_catalog_check_names_what_is_wrong_with_login_and_windows(template, product,
                                                                      reason):
    t = {k: v for k, v in {**TEMPLATE, **template}.items() if v is not None}
    errors = validate({"templates": [t], "products": [{**PRODUCT, **product}]}, "c.toml")
    assert any(reason in e for e in errors), errors


def test_a_windows_template_logs_in_as_administrator_by_default(clean_db, tmp_path):
    catalog.load({"templates": [TEMPLATE], "products": [
        {**PRODUCT, "cicustom": "vendor=local:snippets/no-pwauth.yaml"}]}, str(tmp_path / "k"))
    from pvekvm.models import Template

    row = Template.get(Template.name == "win")
    assert (row.os_type, row.ostype, row.os_user) == ("windows", "win11", "Administrator")
    assert Product.get(Product.name == "p").cicustom == "vendor=local:snippets/no-pwauth.yaml"
    assert validate({"templates": [TEMPLATE], "products": [PRODUCT]}, "c.toml") == []
