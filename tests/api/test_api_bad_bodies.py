"""Request bodies no route should parse: over the size bound or nested past the JSON depth
bound, on every route that takes a body — refused with 422 and a reason before FastAPI or the
route decodes them (no RecursionError, no 1 MB parse), and the API answers on."""

from __future__ import annotations

import pytest

from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv

DEEP = b"[" * 30000 + b"]" * 30000
ROUTES = [("post", "/v1/events"), ("put", f"/v1/services/{SID_A}/rdns/192.0.2.10")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_body_nested_30000_deep_is_refused_with_its_depth(api_env: ApiEnv, method, path):
    r = getattr(api_env.api, method)(path, BILLING_TOKEN, data=DEEP)
    assert r.status_code == 422, r.text
    assert "nested 30000 levels deep (max 32)" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_body_of_a_megabyte_is_refused_as_too_large(api_env: ApiEnv, method, path):
    r = getattr(api_env.api, method)(path, BILLING_TOKEN, data=b"[" * (1024 * 1024))
    assert r.status_code == 422 and "too large" in r.json()["detail"], r.text


def test_a_body_inside_the_bounds_reaches_its_route(api_env: ApiEnv):
    nested = b"[" * 32 + b"]" * 32  # at the bound: the route's own refusal, not the bound's
    r = api_env.api.post("/v1/events", BILLING_TOKEN, data=nested)
    assert r.status_code == 422 and "event must be a JSON object" in r.json()["detail"], r.text
    assert api_env.api.get(f"/v1/services/{SID_A}", BILLING_TOKEN).status_code == 200
