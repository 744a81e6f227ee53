"""Hooks for the schemathesis run of tests/api/test_openapi_fuzz.py (``SCHEMATHESIS_HOOKS``).

* A case whose path was generated valid is sent for a service that exists
  (``PVEKVM_FUZZ_SERVICE_ID``): otherwise nearly every positive case would stop at 404.
* JSON integers go out without a fraction: JSON Schema's ``integer`` admits ``97200.0``, the
  event format (like the orders exchange) does not (``true`` and ``1.0`` are not ids)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    meta = case.meta
    sid = os.environ.get("PVEKVM_FUZZ_SERVICE_ID")
    if (sid and case.path_parameters and "service_id" in case.path_parameters
            and meta is not None and not meta.is_negative_at(ParameterLocation.PATH)):
        case.path_parameters["service_id"] = int(sid)
        meta.mark_dirty(ParameterLocation.PATH)
    if isinstance(case.body, dict | list):
        case.body = _integral(case.body)
