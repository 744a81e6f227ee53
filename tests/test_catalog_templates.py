"""A product's ``templates = [...]`` (the OS picker's offer): what config-check and load-catalog
refuse, with the reason, and that a reload makes the offer exactly the file's list."""

from __future__ import annotations

import pytest

from pvekvm import catalog, picker
from pvekvm.catalog_check import validate
from pvekvm.models import Product

TEMPLATES = [{"name": n, "vmid": 9000 + i, "node": "pve1", "os_user": "root"}
             for i, n in enumerate(("debian-12", "ubuntu-2204", "almalinux-9"))]
PRODUCT = {"name": "p", "template": "debian-12", "cores": 1, "memory_mb": 512, "disk_gb": 10,
           "target_node": "pve1", "target_storage": "local-lvm"}


@pytest.mark.parametrize(("offer", "reason"), [
    ("debian-12", "templates: expected a list"),
    (["ubuntu-2204"], "must include the product's own template 'debian-12'"),
    (["debian-12", "debian-12"], "names a template twice"),
    ([], "templates: 1..64 names, got 0"),
    (["debian-12", *[f"t{i}" for i in range(64)]], "templates: 1..64 names, got 65"),
    (["debian-12", "windows-2022"], "templates: no [[templates]] named 'windows-2022'"),
])
def test_config_check_names_what_is_wrong_with_an_offer(offer, reason):
    errors = validate({"templates": TEMPLATES, "products": [{**PRODUCT, "templates": offer}]},
                      "cat.toml")
    assert any(reason in e for e in errors), errors


def test_load_keeps_the_offer_in_order_and_a_reload_replaces_it(clean_db, tmp_path):
    key = str(tmp_path / "k")
    catalog.load({"templates": TEMPLATES, "products": [
        {**PRODUCT, "templates": ["debian-12", "almalinux-9", "ubuntu-2204"]}]}, key)
    product = Product.get(Product.name == "p")
    assert [t.name for t in picker.offered(product)] == ["debian-12", "almalinux-9",
                                                         "ubuntu-2204"]
    catalog.load({"products": [PRODUCT]}, key)  # left out: its own template only
    assert [t.name for t in picker.offered(product)] == ["debian-12"]
    with pytest.raises(catalog.CatalogError, match="product p: unknown template windows-2022"):
        catalog.load({"products": [{**PRODUCT, "templates": ["debian-12", "windows-2022"]}]},
                     key)
    with pytest.raises(catalog.CatalogError, match="must include the product's own template"):
        catalog.load({"products": [{**PRODUCT, "templates": ["ubuntu-2204"]}]}, key)
    assert [t.name for t in picker.offered(product)] == ["debian-12"]  # refused: unchanged
