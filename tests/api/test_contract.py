"""What the API's contract promises beyond the schemathesis run: refusals leave one bounded
record each (never the body), validation refusals say what is wrong field by field without
echoing values, a non-JSON body is a 400, every timestamp carries its offset, 405 lists every
method of the path."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import requests

from pvekvm.apps.api import refusals
from pvekvm.models import AuditLog
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv

TOKEN = BILLING_TOKEN


def _rows_after(mark: int, event: str = "api_refused") -> list[dict]:
    rows = AuditLog.select().where((AuditLog.id > mark) & (AuditLog.event == event))
    return [{"service_id": r.service_id, "size": len(r.detail), **json.loads(r.detail)}
            for r in rows.order_by(AuditLog.id)]


def _mark() -> int:
    last = AuditLog.select().order_by(AuditLog.id.desc()).first()
    return last.id if last else 0


def test_a_refused_event_is_recorded_once_small_and_without_the_body(api_env: ApiEnv):
    refusals._windows.clear()
    mark = _mark()
    secret = "hunter2-" + "s" * 40
    body = {"version": 1, "type": "suspend", "service_id": SID_A, "idempotency_key": "k1",
            "password": secret}
    r = api_env.api.post("/v1/events", TOKEN, json=body)
    assert r.status_code == 422 and "password" in r.json()["detail"]
    huge = api_env.api.post("/v1/events", TOKEN, data=b'{"x": "' + b"a" * 1_000_000 + b'"}')
    assert huge.status_code == 422 and "too large" in huge.json()["detail"]
    rows = _rows_after(mark)
    assert [(x["by"], x["route"], x["status"]) for x in rows] == [
        ("billing:whmcs", "POST /v1/events", 422)] * 2, rows
    assert "unknown field" in rows[0]["reason"] and "too large" in rows[1]["reason"]
    assert all(secret not in json.dumps(x) and x["size"] < 1000 for x in rows), rows


def test_validation_refusals_list_fields_without_values_and_are_recorded(api_env: ApiEnv):
    refusals._windows.clear()
    mark = _mark()
    long_name = "a" * 5000
    r = api_env.api.put(f"/v1/services/{SID_A}/rdns/192.0.2.1", TOKEN,
                        json={"hostname": long_name})
    problem = r.json()
    assert r.status_code == 422 and isinstance(problem["detail"], str), problem
    assert [e["loc"] for e in problem["errors"]] == [["body", "hostname"]], problem
    assert long_name not in r.text and problem["errors"][0]["type"] == "string_too_long"
    usage = api_env.api.get(f"/v1/services/{SID_A}/usage?from=2026-01-01T00:00:00Z", TOKEN)
    assert usage.status_code == 422 and usage.json()["errors"][0]["loc"] == ["query", "to"]
    rows = _rows_after(mark)
    assert [(x["service_id"], x["route"]) for x in rows] == [
        (SID_A, "PUT /v1/services/{service_id}/rdns/{address}"),
        (SID_A, "GET /v1/services/{service_id}/usage")], rows
    assert all(long_name not in x["reason"] and x["size"] < 1000 for x in rows)


def test_a_body_that_is_not_json_is_a_400(api_env: ApiEnv):
    r = requests.put(f"{api_env.api.url}/v1/services/{SID_A}/rdns/192.0.2.1", data=b"\x00{",
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 400 and r.json() == {"detail": "malformed JSON body"}, r.text


def test_refusals_of_unknown_callers_are_recorded_without_the_token_and_a_flood_is_bounded(
        api_env: ApiEnv):
    refusals._windows.clear()
    mark = _mark()
    assert api_env.api.post("/v1/events").status_code == 401
    wrong = "wrong-token-" + "x" * 30
    for _ in range(refusals.ROWS_PER_WINDOW + 10):
        assert api_env.api.post(f"/v1/services/{SID_A}/console", wrong).status_code == 401
    rows = _rows_after(mark)
    assert rows[0]["by"] == "anonymous" and rows[0]["status"] == 401
    flood = [x for x in rows if x["by"] == "invalid-token"]
    assert len(flood) == refusals.ROWS_PER_WINDOW, len(flood)
    assert [x["by"] for x in _rows_after(mark, "api_refusals_suppressed")] == ["invalid-token"]
    assert not any(wrong in json.dumps(x) for x in rows)


def test_405_allows_every_method_of_the_path(api_env: ApiEnv):
    r = requests.options(f"{api_env.api.url}/v1/services/{SID_A}/rdns/192.0.2.1", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE, PUT", r.headers
    r = requests.post(f"{api_env.api.url}/v1/services/{SID_A}", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


def test_every_timestamp_carries_its_utc_offset(api_env: ApiEnv):
    ops = api_env.api.get(f"/v1/services/{SID_A}/operations", TOKEN).json()
    stamps = [op["created_at"] for op in ops] + [s["at"] for op in ops for s in op["steps"]]
    assert stamps and all(datetime.fromisoformat(t).utcoffset() == timedelta(0)
                          for t in stamps if t is not None), stamps
