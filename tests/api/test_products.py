"""``GET /v1/products``: the catalog billing sets its products up from (the WHMCS module's
dropdowns), over real HTTP; billing tokens only."""

from __future__ import annotations

from pvekvm.models import Product
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv


def test_the_catalog_lists_products_and_templates_for_billing_only(api_env: ApiEnv):
    api = api_env.api
    assert api.get("/v1/products").status_code == 401
    r = api.get("/v1/products", api_env.client_token(SID_A))
    assert r.status_code == 403 and "billing token" in r.json()["detail"]

    r = api.get("/v1/products", BILLING_TOKEN)
    assert r.status_code == 200, r.text
    body = r.json()
    products = {p["name"]: p for p in body["products"]}
    assert set(products) == {p.name for p in Product.select()}  # what the catalog loaded
    small = products["vps-small"]
    assert (small["template"], small["cores"], small["memory_mb"], small["disk_gb"]) == (
        "debian-12", 2, 2048, 20)
    assert small["snapshot_limit"] == 3 and small["backup_limit"] == 2
    assert small["templates"] == ["debian-12", "ubuntu-2204"]  # the OS picker's offer
    assert products["vps-multi"]["templates"] == ["debian-12"]  # none listed: its own
    assert small["iso_storage"] == "iso" and small["ipv6"] is True
    assert small["locations"] == ["default"]  # one cluster: create may leave location out
    assert body["locations"] == ["default"]  # the WHMCS module's Location dropdown
    assert products["vps-multi"]["extra_ipv4"] == 2
    assert {t["name"]: t["os_user"] for t in body["templates"]}["ubuntu-2204"] == "ubuntu"
    # placement stays the engine's: no node, storage, pool or VMID is shown
    text = r.text
    assert "pve2" not in text and "local-lvm" not in text and "public-v4" not in text
    assert "9000" not in text
