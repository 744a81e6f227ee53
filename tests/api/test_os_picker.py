"""The OS picker over real HTTP: the templates a product offers (``templates = [...]`` in the
catalog, default its own), per service and per product, scoped to the client token's service."""

from __future__ import annotations

from pvekvm.models import Service, Template
from tests.api.conftest import BILLING_TOKEN, SID_A, SID_B, ApiEnv


def test_a_service_lists_the_templates_its_product_offers(api_env: ApiEnv):
    api = api_env.api
    assert api.get(f"/v1/services/{SID_A}/templates").status_code == 401
    r = api.get(f"/v1/services/{SID_A}/templates", api_env.client_token(SID_A))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product"] == "vps-small"
    choices = {t["name"]: t for t in body["templates"]}
    assert list(choices) == ["debian-12", "ubuntu-2204"]  # the catalog's order
    assert choices["ubuntu-2204"] == {"name": "ubuntu-2204", "os_family": "ubuntu",
                                      "os_type": "linux", "os_user": "ubuntu", "default": False,
                                      "current": False}
    installed = Template.get_by_id(Service.get_by_id(SID_A).template_id).name
    assert [n for n, t in choices.items() if t["current"]] == [installed] == ["debian-12"]
    assert choices["debian-12"]["default"] is True
    # a client token reads its own service only: another's is not found, as if absent
    r = api.get(f"/v1/services/{SID_B}/templates", api_env.client_token(SID_A))
    assert r.status_code == 404


def test_the_order_form_lists_a_products_offer_and_a_client_only_its_own(api_env: ApiEnv):
    api = api_env.api
    r = api.get("/v1/products/vps-large/templates", BILLING_TOKEN)
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["templates"]] == ["debian-12", "ubuntu-2204",
                                                          "almalinux-9"]
    assert all(t["current"] is None for t in r.json()["templates"])  # no service: no "current"
    r = api.get("/v1/products/vps-multi/templates", BILLING_TOKEN)  # lists none: its own only
    assert [(t["name"], t["default"]) for t in r.json()["templates"]] == [("debian-12", True)]
    assert api.get("/v1/products/no-such/templates", BILLING_TOKEN).status_code == 404
    assert api.get("/v1/products/VPS-" + "x" * 70 + "/templates", BILLING_TOKEN).status_code == 422

    token = api_env.client_token(SID_A)
    r = api.get("/v1/products/vps-small/templates", token)
    assert r.status_code == 200 and len(r.json()["templates"]) == 2
    r = api.get("/v1/products/vps-large/templates", token)  # another product: refused
    assert r.status_code == 403 and "own service's product" in r.json()["detail"]
    # an unknown product reads the same as another's to a client (nothing to probe names with)
    assert api.get("/v1/products/no-such/templates", token).status_code == 403


def test_the_service_view_says_when_the_vm_is_in_rescue_mode(api_env: ApiEnv):
    api, token = api_env.api, api_env.client_token(SID_A)
    assert api.get(f"/v1/services/{SID_A}", token).json()["rescue"] is False
    Service.update(rescue_before='{"boot": "order=scsi0", "slot": "ide3", "media": null}').where(
        Service.id == SID_A).execute()  # as rescue_on records it (steps/rescue.py)
    try:
        assert api.get(f"/v1/services/{SID_A}", token).json()["rescue"] is True
    finally:
        Service.update(rescue_before=None).where(Service.id == SID_A).execute()
