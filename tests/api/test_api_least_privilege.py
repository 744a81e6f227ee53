"""The API as deployed: ``python -m pvekvm api`` on its least-privilege MariaDB and RabbitMQ
users (pvekvm.grants) serves a client's credentials and audits the read, before and after
the secret key is rotated under it (no restart), and a clear 503 if the key file vanishes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import requests

from pvekvm import keyrotate, secrets
from pvekvm.apps.api.auth import hash_token
from pvekvm.models import AuditLog, Service
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv
from tests.api.server import _auth, api_command
from tests.test_grants import amqp_roles, db_roles
from workers.testing.harness import write_config


def test_the_api_on_its_own_users_reads_credentials_across_a_key_rotation(
        api_env: ApiEnv, amqp_url, database_url, database, tmp_path) -> None:
    key_file = api_env.settings.secret_key_file
    with amqp_roles(amqp_url, api_env.settings.namespace) as mq, \
            db_roles(database, database_url) as sql:
        own = replace(api_env.settings, database_url=sql["api"], amqp_url=mq["api"])
        config = write_config(own, tmp_path / "api.toml")
        with config.open("a") as fh:
            fh.write(f'[api]\n[api.tokens]\nwhmcs = "{hash_token(BILLING_TOKEN)}"\n')
        with api_command(config, 1, tmp_path / "api.log") as url:
            def credentials() -> requests.Response:
                return requests.get(f"{url}/v1/services/{SID_A}/credentials",
                                    headers=_auth(BILLING_TOKEN), timeout=30)

            before = credentials()
            assert before.status_code == 200, before.text
            old_keys = secrets.read_keys(key_file)
            report = keyrotate.rotate(database, key_file, drop_old=True)
            assert report.keys_after == 1 and secrets.read_keys(key_file) != old_keys
            after = credentials()
            assert after.status_code == 200 and after.json() == before.json()
            password_enc = Service.get_by_id(SID_A).password_enc
            assert password_enc is not None
            assert secrets.decrypt(key_file, password_enc) == after.json()["password"]
            # the key file vanishes under the running API: a clear 503, and no key invented
            aside = Path(key_file).rename(tmp_path / "aside.key")
            try:
                gone = credentials()
                assert gone.status_code == 503
                assert gone.json() == {"detail": "secret_key_unavailable"}
                assert not Path(key_file).exists()
            finally:
                aside.rename(key_file)
            assert credentials().json() == before.json()
            # a key file that is not the data's (another host's): the same clear 503
            right = Path(key_file).read_bytes()
            secrets.create_key(str(tmp_path / "other.key"))
            Path(key_file).write_bytes((tmp_path / "other.key").read_bytes())
            try:
                wrong = credentials()
                assert (wrong.status_code, wrong.json()) == (
                    503, {"detail": "secret_key_unavailable"})
            finally:
                Path(key_file).write_bytes(right)
            assert credentials().json() == before.json()
    reads = AuditLog.select().where((AuditLog.service_id == SID_A)
                                    & (AuditLog.event == "api_credentials_read")).count()
    assert reads >= 2
