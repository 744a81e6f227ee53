"""pvesim answers ``sshkeys`` and ``cipassword`` as qemu-server does: the value must be
urlencoded (pve-common's format), every key must load (validate_ssh_public_keys), and a VM
whose saved ostype is Windows keeps its password plain (cloudbase-init reads it)."""

from __future__ import annotations

import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from proxmoxer.core import ResourceException

from pvesim.vmconfig import configdrive_metadata

from .conftest import wait_upid


def _key(comment: str = "me@laptop") -> str:
    line = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


def _err(call, **kw) -> ResourceException:
    with pytest.raises(ResourceException) as err:
        call(**kw)
    return err.value


@pytest.fixture()
def vm(px):
    wait_upid(px, px.nodes("pve1").qemu(9000).clone.post(newid=4301, name="keys"))
    yield px.nodes("pve1").qemu(4301)
    wait_upid(px, px.nodes("pve1").qemu(4301).delete())


def test_sshkeys_must_be_urlencoded_and_hold_real_keys(vm, sim):
    one, two = _key(), _key("second")
    raw = f"{one}\n{two}"
    e = _err(vm.config.put, sshkeys=raw)  # not encoded: spaces, '+', '/', newline
    assert e.status_code == 400
    assert e.errors["sshkeys"].startswith("invalid format - invalid urlencoded string: ")
    e = _err(vm.config.put, sshkeys=urllib.parse.quote_plus(raw))  # spaces as '+'
    assert e.status_code == 400 and "invalid urlencoded string" in e.errors["sshkeys"]
    e = _err(vm.config.put, sshkeys=urllib.parse.quote(one[:40] + "\n" + two, safe=""))
    assert e.status_code == 500 and e.content == "SSH public key validation error"

    encoded = urllib.parse.quote(raw + "\n", safe="")  # a blank line is skipped, as in PVE
    vm.config.put(sshkeys=encoded)
    assert vm.config.get()["sshkeys"] == encoded  # stored as sent, still encoded
    user = vm.cloudinit.dump.get(type="user")
    assert f"ssh_authorized_keys:\n  - {one}\n  - {two}\n" in user


def test_a_windows_vm_keeps_its_password_plain_once_its_ostype_is_saved(vm, sim):
    vm.config.put(ostype="win11", cipassword="Secret-1")  # ostype not saved yet: hashed
    assert sim.vm(4301)["config"]["cipassword"].startswith("$5$")
    vm.config.put(cipassword="Secret-2", citype="configdrive2", sshkeys=urllib.parse.quote(
        _key(), safe=""))
    conf = sim.vm(4301)["config"]
    assert conf["cipassword"] == "Secret-2" and vm.config.get()["cipassword"] == "**********"
    meta = configdrive_metadata(conf)
    assert meta["admin_pass"] == "Secret-2" and list(meta["public_keys"]) == ["key-0"]
    vm.config.put(ipconfig0="ip=192.0.2.9/24,gw=192.0.2.1", nameserver="192.0.2.53")
    assert vm.cloudinit.dump.get(type="network") == (  # configdrive2: ENI, as PVE dumps it
        "auto lo\niface lo inet loopback\n\n        dns_nameservers 192.0.2.53\n"
        "auto eth0\niface eth0 inet static\n        address 192.0.2.9\n"
        "        netmask 255.255.255.0\n        gateway 192.0.2.1\n")
    assert vm.cloudinit.dump.get(type="meta").startswith('{\n     "uuid": "')
    vm.config.put(ostype="l26")
    vm.config.put(cipassword="Secret-3")
    assert sim.vm(4301)["config"]["cipassword"].startswith("$5$")
