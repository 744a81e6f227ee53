"""Intake (on MariaDB) against orders that try to reach what an earlier life of the service, or
another order, left behind: a service id reused after terminate starts with none of its old
keys, language, rescue record or ISO boot record; rescue orders are judged as the service will
be when their turn comes (queued suspend or terminate count), each refused once with its reason;
an order cannot choose the rescue ISO, a storage, or the columns an operation sets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from pvekvm import catalog, secrets
from pvekvm.config import ROOT, EngineSettings
from pvekvm.models import Operation, Service
from workers.intake import handle_order

SID = 61
ENGINE = EngineSettings(rescue_iso="iso:iso/systemrescue-11.02-amd64.iso")
KEY = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture()
def catalog_db(clean_db, tmp_path):
    secrets.create_key(str(tmp_path / "secret.key"))
    catalog.load_file(ROOT / "config" / "catalog.toml", str(tmp_path / "secret.key"))
    return clean_db


def _order(kind: str, key: str, **fields: object) -> str | None:
    body = {"version": 1, "type": kind, "idempotency_key": key, "service_id": SID, **fields}
    return handle_order(json.dumps(body).encode(), ENGINE).dead_reason


def _create(key: str, client: int, **fields: object) -> None:
    assert _order("create", key, client_id=client, product="vps-small",
                  email=f"c{client}@example.com", **fields) is None
    Operation.update(status="done", active_service=None).where(
        Operation.idempotency_key == key).execute()
    Service.update(status="ready").where(Service.id == SID).execute()


def test_a_reused_service_id_inherits_nothing_of_its_earlier_life(catalog_db):
    _create("life1", client=4, ssh_keys=[f"{KEY} old@client"], language="arabic")
    Service.update(status="terminated", rescue_before='{"boot": null, "slot": "ide3", '
                   '"media": null}', boot_before_iso="order=scsi0").where(
        Service.id == SID).execute()  # terminated while in rescue with an ISO mounted
    _create("life2", client=9)
    svc = Service.get_by_id(SID)
    assert (svc.client_id, svc.ssh_keys, svc.language, svc.rescue_before,
            svc.boot_before_iso, svc.username, svc.password_enc) == (9, None, None, None, None,
                                                                     None, None)
    assert _order("rescue_off", "r-1") == f"service {SID} is not in rescue mode"
    assert _order("reset_password", "p-1") is None  # no keys of the old life ride along
    params = json.loads(Operation.get(Operation.idempotency_key == "p-1").params)
    assert "ssh_keys" not in json.dumps(params) and KEY.split()[1] not in json.dumps(params)


def test_rescue_orders_are_judged_as_the_service_will_be_when_their_turn_comes(catalog_db):
    _create("c-1", client=4)
    refused = {}
    refused["off, never in rescue"] = _order("rescue_off", "o-1")
    assert _order("rescue_off", "o-1") == refused["off, never in rescue"]  # again: the same
    assert _order("rescue_on", "on-1") is None
    refused["on, queued on"] = _order("rescue_on", "on-2")
    refused["iso_mount, queued on"] = _order("iso_mount", "m-1", iso="debian.iso")
    refused["reinstall_iso, queued on"] = _order("reinstall_iso", "ri-1", iso="debian.iso")
    assert _order("suspend", "s-1") is None  # suspend runs in rescue: the VM just stops
    refused["off, queued suspend"] = _order("rescue_off", "o-2")
    assert _order("terminate", "t-1") is None
    refused["off, queued terminate"] = _order("rescue_off", "o-3")
    refused["language, queued terminate"] = _order("language_change", "l-1", language="de")
    assert refused == {
        "off, never in rescue": f"service {SID} is not in rescue mode",
        "on, queued on": f"service {SID} is in rescue mode already",
        "iso_mount, queued on": f"service {SID} is in rescue mode: send rescue_off first (a "
                                "iso_mount would change the disks or CD-ROM the rescue system "
                                "works on)",
        "reinstall_iso, queued on": f"service {SID} is in rescue mode: send rescue_off first "
                                    "(a reinstall_iso would change the disks or CD-ROM the "
                                    "rescue system works on)",
        "off, queued suspend": f"service {SID} is suspended: only unsuspend, terminate and "
                               "package changes are accepted",
        "off, queued terminate": refused["off, queued terminate"],
        "language, queued terminate": refused["language, queued terminate"]}
    assert "terminat" in str(refused["off, queued terminate"])
    assert "terminat" in str(refused["language, queued terminate"])
    kinds = [o.kind for o in Operation.select().where(Operation.service_id == SID)
             .order_by(Operation.id)]
    assert kinds == ["deploy", "rescue_on", "suspend", "terminate"]  # no refused one queued
    rescue = json.loads(Operation.get(Operation.idempotency_key == "on-1").params)
    assert rescue == {"storage": "iso", "iso": "systemrescue-11.02-amd64.iso"}  # the engine's


# an order naming what the engine chooses: refused as an unknown field
CHOSEN: list[tuple[str, dict[str, Any], str]] = [
    ("rescue_on", {"iso": "evil.iso"}, "field 'iso': unknown field for event type 'rescue_on'"),
    ("rescue_on", {"storage": "local"},
     "field 'storage': unknown field for event type 'rescue_on'"),
    ("reinstall_iso", {"iso": "a.iso", "storage": "other"},
     "field 'storage': unknown field for event type 'reinstall_iso'"),
    ("language_change", {"language": "de", "service": {"client_id": 1}},
     "field 'service': unknown field for event type 'language_change'"),
    ("rescue_off", {"service": {"rescue_before": None}},
     "field 'service': unknown field for event type 'rescue_off'"),
]


def test_an_order_cannot_choose_the_rescue_iso_a_storage_or_the_columns_it_sets(catalog_db):
    _create("c-1", client=4)
    for at, (kind, fields, reason) in enumerate(CHOSEN):
        assert _order(kind, f"x-{at}", **fields) == reason
        assert not Operation.select().where(Operation.idempotency_key == f"x-{at}").exists()


def test_a_reinstall_behind_a_package_change_is_judged_by_the_package_it_will_run_under(
        catalog_db):
    """vps-large offers almalinux-9, vps-small does not: a reinstall queued behind a change to
    vps-small may not install it (the offer would be bypassed), and one queued behind a change
    to vps-large may."""
    assert _order("create", "c-1", client_id=4, product="vps-large",
                  email="c4@example.com") is None
    Operation.update(status="done", active_service=None).where(
        Operation.idempotency_key == "c-1").execute()
    Service.update(status="ready").where(Service.id == SID).execute()
    assert _order("change_package", "cp-1", product="vps-small") is None
    assert _order("reinstall", "ri-1", template="almalinux-9") == (
        "template 'almalinux-9' is not offered by product 'vps-small' (offered: debian-12, "
        "ubuntu-2204)")
    assert _order("change_package", "cp-2", product="vps-large") is None
    assert _order("reinstall", "ri-2", template="almalinux-9") is None
