"""Catalog entries for additional IPv4 and routed IPv6 prefixes: what config-check and
load-catalog refuse, each with the reason an operator can act on."""

from __future__ import annotations

import pytest

from pvekvm import catalog
from pvekvm.catalog_check import validate
from pvekvm.models import IpAddress, IpPool

TEMPLATE = {"name": "t", "vmid": 9000, "node": "pve1", "os_user": "debian"}
V4 = {"name": "v4", "version": 4, "network": "100.64.14.0/24", "gateway": "100.64.14.1"}
PREFIXES = {"name": "p6", "version": 6, "network": "2001:db8:14b::/48", "gateway": "fe80::1",
            "assign": 64}
PRODUCT = {"name": "multi", "template": "t", "cores": 1, "memory_mb": 512, "disk_gb": 10,
           "target_node": "pve1", "target_storage": "local-lvm", "ip_pool": "v4",
           "ip6_pool": "p6", "extra_ipv4": 2}


def test_a_product_with_extra_ipv4_and_a_prefix_pool_is_valid():
    assert validate({"templates": [TEMPLATE], "ip_pools": [V4, PREFIXES],
                     "products": [PRODUCT]}, "cat.toml") == []


@pytest.mark.parametrize(("pool", "product", "reason"), [
    ({"assign": 40}, {}, "assign must be a prefix length longer than the network's /48"),
    ({"assign": 129}, {}, "at most 128"),
    ({"version": 4, "network": "100.64.0.0/16"}, {}, "for IPv6 pools only"),
    ({"first": "2001:db8:14b::"}, {}, "first/last are for address pools"),
    ({"gateway": "2001:db8:999::1"}, {}, "neither inside 2001:db8:14b::/48 nor link-local"),
    ({}, {"extra_ipv4": 17}, "extra_ipv4: at most 16 (one NIC each)"),
    ({}, {"extra_ipv4": -1}, "must not be negative"),
    ({}, {"ip_pool": None, "extra_ipv4": 1}, "extra_ipv4: needs an ip_pool"),
    ({}, {"ip6_pool": "v4"}, "ip6_pool: v4 is an IPv4 pool, IPv6 expected"),
])
def test_config_check_names_what_is_wrong(pool, product, reason):
    entry = {k: v for k, v in {**PRODUCT, **product}.items() if v is not None}
    errors = validate({"templates": [TEMPLATE], "ip_pools": [V4, {**PREFIXES, **pool}],
                       "products": [entry]}, "cat.toml")
    assert any(reason in e for e in errors), errors


def test_load_refuses_a_prefix_pool_overlapping_an_address_pool(clean_db, tmp_path):
    key = str(tmp_path / "k")
    catalog.load({"ip_pools": [{"name": "a6", "version": 6, "network": "2001:db8:14b:5::/64",
                                "gateway": "2001:db8:14b:5::1"}]}, key)
    with pytest.raises(catalog.CatalogError, match="prefix pool 2001:db8:14b::/48 overlaps "
                                                   "pool a6"):
        catalog.load({"ip_pools": [PREFIXES]}, key)


def test_load_keeps_no_rows_for_a_prefix_pool(clean_db, tmp_path):
    counts = catalog.load({"templates": [TEMPLATE], "ip_pools": [V4, PREFIXES],
                           "products": [PRODUCT]}, str(tmp_path / "k"))
    pool = IpPool.get(IpPool.name == "p6")
    assert pool.assign == 64 and counts["addresses"] == 254
    assert IpAddress.select().where(IpAddress.pool_id == pool.id).count() == 0
    with pytest.raises(catalog.CatalogError, match="extra_ipv4 must be 0..16"):
        catalog.load({"products": [{**PRODUCT, "extra_ipv4": 20}]}, str(tmp_path / "k"))
