"""The OS picker's routes and POST /v1/events over real HTTP, attacked with a client token:
another product's offer cannot be reached by case, look-alike letters, encoded slashes, dot
segments, NUL or a 1 MB path; the new order types posted as 1 MB or 30,000 levels deep, or with
a secret pasted as a key, are refused with a reason that does not echo them."""

from __future__ import annotations

import json

import pytest
import requests

from tests.api.conftest import BILLING_TOKEN, SID_A, SID_B, ApiEnv

OTHERS = ["vps-large", "vps-multi"]  # products A's client must not read


@pytest.mark.parametrize("name", [
    "VPS-LARGE", "Vps-Large", "vps%E2%80%90large", "vps-l%D0%B0rge", "vps-small%2F..%2Fvps-large",
    "..%2Fvps-large", "vps-small%2F%2E%2E%2Fvps-large", "vps-large%00", "vps-large%20",
    "vps-large.", "%76ps-large", "vps-small/../vps-large", "x" * 8000, "x" * (1 << 20)])
def test_a_client_reaches_no_other_products_offer_by_its_spelling(api_env: ApiEnv, name: str):
    token = api_env.client_token(SID_A)
    try:
        r = api_env.api.get(f"/v1/products/{name}/templates", token)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        # uvicorn's h11 resets the connection on a request head over its limit
        assert len(name) > 64 * 1024
    else:
        _refused(r)
    # A's own product still answers: the refusals above are about the name, not the token
    assert api_env.api.get("/v1/products/vps-small/templates", token).status_code == 200


def _refused(r: requests.Response) -> None:
    assert r.status_code in (400, 403, 404, 414, 422, 431), (r.status_code, r.text[:200])
    assert r.status_code != 200 and not any(p in r.text for p in OTHERS), r.text[:300]
    assert len(r.content) < 2000  # a long path is not echoed back


@pytest.mark.parametrize("path", [f"{SID_B}", f"0{SID_B}", f"+{SID_B}", f"{SID_A}%2F..%2F{SID_B}",
                                  f"{SID_A}/../{SID_B}", f"{SID_B}.0", f"{SID_B}%00"])
def test_a_client_reaches_no_other_services_picker_by_its_id(api_env: ApiEnv, path: str):
    r = api_env.api.get(f"/v1/services/{path}/templates", api_env.client_token(SID_A))
    assert r.status_code in (404, 422), (r.status_code, r.text[:200])
    assert "current" not in r.text


def _post(api_env: ApiEnv, body: bytes):
    return api_env.api.post("/v1/events", BILLING_TOKEN, data=body)


def test_the_new_order_types_posted_hostile_are_refused_with_a_reason(api_env: ApiEnv):
    base = {"version": 1, "idempotency_key": "hostile-1", "service_id": SID_A}
    for kind, fields in (("reinstall_iso", {"iso": "a.iso"}), ("rescue_on", {}),
                         ("rescue_off", {}), ("language_change", {"language": "de"})):
        body = json.dumps({**base, "type": kind, **fields}).encode()
        r = _post(api_env, body[:-1] + b', "x": "' + b"a" * (1 << 20) + b'"}')
        assert r.status_code == 422 and r.json()["detail"] == "body too large: over 65536 bytes"
        r = _post(api_env, body[:-1] + b', "x": ' + b"[" * 30000 + b"]" * 30000 + b"}")
        assert r.status_code == 422, r.text[:200]
        assert r.json()["detail"] == ("body is not JSON the API reads: nested 30001 levels "
                                      "deep (max 32)")
    r = _post(api_env, json.dumps({**base, "type": "reinstall_iso",
                                   "iso": "../../etc/pve/priv/authkey.key.iso"}).encode())
    assert r.status_code == 422 and "authkey" not in r.text
    r = _post(api_env, json.dumps({**base, "type": "reset_password",
                                   "ssh_keys": ["hunter2-pass word"]}).encode())
    assert r.status_code == 422 and r.json()["detail"].startswith("field 'ssh_keys': key 1: ")
    assert "hunter2" not in r.text
