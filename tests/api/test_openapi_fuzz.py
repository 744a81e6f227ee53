"""Property-based run of the API against its own OpenAPI document (schemathesis): generated
requests, valid and invalid, with the billing token, never get a 5xx and every answer matches
the document. Bounded examples per operation to keep CI short. Events go to a namespace no
worker consumes, so generated orders change nothing."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from pvekvm import messaging
from tests.api.conftest import BILLING_TOKEN, ApiEnv
from tests.api.server import ApiServer

EXAMPLES = 15  # per operation: a bounded run for CI


@pytest.fixture(scope="module")
def fuzz_api(api_env: ApiEnv):
    topo = messaging.Topology(f"t-fuzz-{uuid.uuid4().hex[:8]}")
    try:
        with ApiServer(replace(api_env.settings, namespace=topo.namespace)) as api:
            yield api
    finally:
        messaging.delete_topology(api_env.settings.amqp_url, topo)


def test_no_server_errors_and_answers_match_the_document(fuzz_api: ApiServer):
    schema = schemathesis.openapi.from_url(fuzz_api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {BILLING_TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call_and_validate(headers=headers, checks=[
                not_a_server_error, status_code_conformance, response_schema_conformance])
            calls.append(response.status_code)

        run()
    assert len(calls) > 5 * len(operations) and {200, 404, 422} <= set(calls), sorted(set(calls))
