"""The API against its own OpenAPI document: ``schemathesis run --checks all`` (every check:
no 5xx, statuses, content types, headers and bodies as documented, schema-valid requests
accepted, schema-invalid ones refused, OPTIONS/405 ``Allow``, ...) with the billing token, over
the coverage, fuzzing and stateful phases, must find nothing. Bounded (few examples, fixed seed,
deterministic generation, a timeout) to keep CI short. Positive cases go to service A (see
tests/api/schemathesis_hooks.py); events go to a namespace no worker consumes, so generated
orders change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from pvekvm import messaging
from pvekvm.config import ROOT
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv
from tests.api.server import ApiServer

EXAMPLES = 5  # per operation and phase (the coverage phase, deterministic, is most of the ~60 s)
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def fuzz_api(api_env: ApiEnv):
    topo = messaging.Topology(f"t-fuzz-{uuid.uuid4().hex[:8]}")
    try:
        settings = api_env.settings
        feed = replace(settings.webhooks.delivery, feed_max_wait_s=0.2)  # long polls: short
        with ApiServer(replace(settings, namespace=topo.namespace,
                               webhooks=replace(settings.webhooks, delivery=feed))) as api:
            yield api
    finally:
        messaging.delete_topology(api_env.settings.amqp_url, topo)


@pytest.mark.parametrize("phases, least_cases", [
    ("examples,fuzzing,stateful", 100),
    # the coverage phase's ~1,400 boundary cases take ~70 s here: on demand (scripts/test -m slow)
    pytest.param("examples,coverage,fuzzing,stateful", 500, marks=pytest.mark.slow)])
def test_schemathesis_all_checks_find_nothing(fuzz_api: ApiServer, tmp_path: Path, phases: str,
                                              least_cases: int):
    report = tmp_path / "report.json"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
           "PVEKVM_FUZZ_SERVICE_ID": str(SID_A), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")),
         "--config-file", str(HERE / "schemathesis.toml"), "run", fuzz_api.url + "/openapi.json",
         "--checks", "all", "--phases", phases, "-H", f"Authorization: Bearer {BILLING_TOKEN}",
         "--max-examples", str(EXAMPLES), "--seed", "23", "--generation-deterministic",
         "--no-shrink", "--suppress-health-check", "all",
         "--workers", "1", "--request-timeout", "10", "--no-color",
         "--report", "json", "--report-json-path", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-12000:]
    summary = json.loads(report.read_text())
    document = requests.get(fuzz_api.url + "/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in document["paths"].values())
    assert summary["operations"]["tested"] == operations and summary["failures"] == [], summary
    assert summary["test_cases"]["generated"] > least_cases, summary["test_cases"]
