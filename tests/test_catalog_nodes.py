"""Which nodes a product may run on, as the catalog says it (issue 24 item 3): ``nodes``, a
``[[node_groups]]`` group, or the old ``target_node`` as a group of one; what config-check and
load-catalog refuse, each with its reason, in time linear in what was sent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pvekvm import catalog
from pvekvm.catalog_check import validate
from pvekvm.models import Product
from pvekvm.placement import allowed_nodes, group_name

TEMPLATE = {"name": "t", "vmid": 9000, "node": "pve1", "os_user": "debian"}
GROUP = {"name": "fra", "nodes": ["pve1", "pve2", "pve3"]}
PRODUCT = {"name": "g", "template": "t", "cores": 1, "memory_mb": 512, "disk_gb": 10,
           "target_storage": "local-lvm", "group": "fra"}


def test_nodes_a_group_or_the_old_target_node(clean_db, tmp_path):
    key = str(tmp_path / "k")
    data: dict[str, list[dict[str, Any]]] = {
        "templates": [TEMPLATE], "node_groups": [GROUP], "products": [
        PRODUCT,
        {**PRODUCT, "name": "n", "group": None, "nodes": ["pve3", "pve2"]},
        {**PRODUCT, "name": "old", "group": None, "target_node": "pve2"}]}
    for p in data["products"]:
        if p.get("group") is None:
            p.pop("group")
    assert validate(data, "cat.toml") == []
    catalog.load(data, key)
    by = {p.name: p for p in Product.select()}
    assert allowed_nodes(by["g"]) == ["pve1", "pve2", "pve3"] and group_name(by["g"]) == "group fra"
    assert allowed_nodes(by["n"]) == ["pve3", "pve2"] and by["n"].target_node == "pve3"
    assert allowed_nodes(by["old"]) == ["pve2"] and group_name(by["old"]) == "node pve2"
    catalog.load({"products": [{**data["products"][2], "name": "g"}]}, key)  # a reload
    assert allowed_nodes(Product.get(Product.name == "g")) == ["pve2"]  # the group is gone


@pytest.mark.parametrize(("groups", "product", "reason"), [
    ([GROUP], {"group": "ber"}, "unknown node group 'ber'"),
    ([GROUP], {"nodes": ["pve1"]}, "name nodes or a group, not both"),
    ([GROUP], {"group": None}, "needs target_node, nodes or group"),
    ([{"name": "fra", "nodes": []}], {}, "nodes must be a list of 1..64 node names"),
    ([{"name": "fra", "nodes": ["pve1", "pve1"]}], {}, "a node is named twice"),
    ([{"name": "fra", "nodes": ["pve1", "../etc"]}], {}, "'../etc' is not a node name"),
    ([{"name": "fra", "nodes": ["pve1"]}] * 2, {}, "defined twice"),
    ([GROUP], {"group": None, "nodes": "pve1"}, "nodes: expected a list"),
])
def test_config_check_and_the_loader_say_what_is_wrong(clean_db, tmp_path, groups, product,
                                                       reason):
    entry = {k: v for k, v in {**PRODUCT, **product}.items() if v is not None}
    data = {"templates": [TEMPLATE], "node_groups": groups, "products": [entry]}
    errors = validate(data, "cat.toml")
    assert any(reason in e for e in errors), errors
    with pytest.raises((catalog.CatalogError, TypeError, ValueError)):
        catalog.load(data, str(tmp_path / "k"))


def test_a_huge_node_list_is_refused_at_once():
    nodes = [f"n{i}" for i in range(200_000)]
    start = time.monotonic()
    errors = validate({"templates": [TEMPLATE], "node_groups": [{"name": "x", "nodes": nodes}],
                       "products": [{**PRODUCT, "group": "x"}]}, "cat.toml")
    assert time.monotonic() - start < 0.5
    assert any("nodes must be a list of 1..64 node names" in e for e in errors)
