"""The settings and catalog side of client reverse DNS: the product's rdns_policy is checked by
config-check and load-catalog, ``[rdns]`` settings are validated, IDNA 2008 decides xn-- labels.
(The policy itself, over HTTP, AMQP and real DNS: tests/api/test_api_rdns.py.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from producers.events import InvalidEvent, RdnsSetEvent
from pvekvm import catalog
from pvekvm.catalog_check import validate
from pvekvm.config import ROOT, ConfigError, RdnsSettings, load_settings
from pvekvm.models import Product
from pvekvm.validation import is_idna2008_a_label


def _catalog(**vps_small: object) -> dict:
    data = tomllib.loads((ROOT / "config" / "catalog.toml").read_text())
    data["products"][0].update(vps_small)
    return data


def test_the_catalog_refuses_an_unknown_rdns_policy_and_defaults_to_owned_or_fcrdns(
        clean_db, tmp_path: Path):
    key = str(tmp_path / "key")
    errors = validate(_catalog(rdns_policy="anything"), "cat.toml")
    assert errors == ["cat.toml: [[products]] #1 (vps-small) rdns_policy: expected one of "
                      "owned, fcrdns, owned-or-fcrdns, off, got 'anything'"]
    with pytest.raises(catalog.CatalogError, match="product vps-small: rdns_policy: expected"):
        catalog.load(_catalog(rdns_policy="anything"), key)
    catalog.load(_catalog(rdns_policy="owned"), key)
    assert Product.get(Product.name == "vps-small").rdns_policy == "owned"
    catalog.load(_catalog(), key)  # left out: the default again, as for a new product
    assert {p.rdns_policy for p in Product.select()} == {"owned-or-fcrdns"}


def test_rdns_settings_name_the_bad_resolver_entry(tmp_path: Path, monkeypatch):
    assert RdnsSettings(resolver="127.0.0.1:5354, [::1]:53, 192.0.2.53").nameservers() == [
        ("127.0.0.1", 5354), ("::1", 53), ("192.0.2.53", 53)]
    monkeypatch.setenv("DATABASE_URL", "mysql://root@127.0.0.1/x")
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1/")
    for value, problem in (('"ns.example:53"', "resolver: expected"),
                           ('"127.0.0.1:99999"', "bad port"),
                           ("53", "resolver: expected str")):
        cfg = tmp_path / "p.toml"
        cfg.write_text(f"[rdns]\nresolver = {value}\n")
        with pytest.raises(ConfigError, match=problem):
            load_settings(cfg)
    cfg.write_text("[rdns]\nchanges_per_hour = -1\n")
    with pytest.raises(ConfigError, match=r"\[rdns\] changes_per_hour: must not be negative"):
        load_settings(cfg)


@pytest.mark.parametrize(("label", "ok"), [
    ("xn--bcher-kva", True),   # bücher
    ("xn--zca", True),         # ß: PVALID in IDNA 2008 (IDNA 2003 mapped it to ss)
    ("xn--n3h", False),        # U+2603 SNOWMAN: a symbol, DISALLOWED
    ("xn--ls8h", False),       # U+1F4A9: an emoji, DISALLOWED
    ("xn--bcher-kva-", False),  # not the label the U-label encodes to
    ("xn--a", False), ("xn--", False), ("xn--abc", False),  # ASCII-only or no punycode
])
def test_xn_labels_are_idna_2008_a_labels(label: str, ok: bool):
    assert is_idna2008_a_label(label) is ok


def test_a_ptr_name_with_a_disallowed_a_label_is_refused():
    with pytest.raises(InvalidEvent, match="field 'hostname'.*not an IDNA 2008 A-label"):
        RdnsSetEvent(service_id=1, address="192.0.2.1", hostname="mail.xn--n3h.example")
    assert RdnsSetEvent(service_id=1, address="192.0.2.1",
                        hostname="XN--BCHER-KVA.example").hostname == "xn--bcher-kva.example"
