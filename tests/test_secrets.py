"""Secrets at rest: encrypted with a key file that many processes may create at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from pvekvm import keyrotate, preflight, secrets
from pvekvm.config import Settings
from pvekvm.models import DnsProvider, Product, Service, Template


def test_password_round_trips_and_is_not_stored_in_clear(tmp_path):
    key = str(tmp_path / "k")
    secrets.create_key(key)
    token = secrets.encrypt(key, "s3cret-Pass")
    assert b"s3cret" not in token
    assert secrets.decrypt(key, token) == "s3cret-Pass"


def test_processes_racing_to_create_the_key_agree_on_one_key(tmp_path):
    key = tmp_path / "race" / "secret.key"
    code = ("import sys; from pvekvm import secrets; secrets.create_key(sys.argv[1]); "
            "sys.stdout.write(secrets.encrypt(sys.argv[1], 'x').decode())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(key)], stdout=subprocess.PIPE)
             for _ in range(8)]
    tokens = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {secrets.decrypt(str(key), t) for t in tokens} == {"x"}


def test_generated_passwords_mix_cases_and_digits():
    for _ in range(50):
        pw = secrets.generate_password()
        assert len(pw) == 16 and pw.isalnum()
        assert any(c.islower() for c in pw) and any(c.isupper() for c in pw)
        assert any(c.isdigit() for c in pw)


# ------------------------------------------------------------------ a missing key file

def test_a_missing_key_file_is_never_invented_by_encrypt_or_decrypt(tmp_path):
    key = str(tmp_path / "wrong" / "secret.key")
    with pytest.raises(secrets.KeyFileMissing, match=r"\[secrets\] key_file"):
        secrets.encrypt(key, "pw")
    with pytest.raises(secrets.KeyFileMissing):
        secrets.decrypt(key, b"gAAAA")
    assert not Path(key).exists()


def _settings(database_url: str, key: str) -> Settings:
    return Settings(database_url=database_url, amqp_url="amqp://unused", secret_key_file=key)


def test_start_up_creates_a_key_only_while_no_value_is_encrypted(clean_db, database_url,
                                                                 tmp_path):
    first = str(tmp_path / "first.key")
    assert preflight.check_secret_key(_settings(database_url, first)).status == "ok"
    assert Path(first).exists()  # a new installation: created
    _service(password_enc=secrets.encrypt(first, "root-pw"))
    wrong = str(tmp_path / "typo.key")
    verdict = preflight.check_secret_key(_settings(database_url, wrong))
    assert verdict.failed and "does not exist" in verdict.detail
    assert "1 values encrypted" in verdict.detail
    assert not Path(wrong).exists()


def test_a_worker_with_a_wrong_key_path_exits_3_naming_the_setting(clean_db, database_url,
                                                                   tmp_path):
    key = str(tmp_path / "k")
    secrets.create_key(key)
    _service(password_enc=secrets.encrypt(key, "root-pw"))
    wrong = tmp_path / "missing" / "secret.key"
    env = {k: v for k, v in os.environ.items() if k not in ("PVEKVM_CONFIG",)}
    env.update(DATABASE_URL=database_url, PVEKVM_SECRET_KEY_FILE=str(wrong))
    for argv in (["-m", "pvekvm", "rotate-keys"], ["-m", "pvekvm", "api", "--port", "1"],
                 ["-m", "pvekvm", "init-db"]):
        out = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
        assert out.returncode == 3, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "PVEKVM_SECRET_KEY_FILE" in lines[0], out.stderr
        assert str(wrong) in lines[0] and "Traceback" not in out.stderr
    assert not wrong.exists()
    out = subprocess.run([sys.executable, "-m", "pvekvm", "init-key"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and "1 encrypted values" in out.stderr
    assert not wrong.exists()


# ------------------------------------------------------------------ rotation

def _service(sid: int = 3001, **fields) -> Service:
    tpl = Template.get_or_create(name="t", vmid=9000, node="pve1")[0]
    prod = Product.get_or_create(name="p", defaults=dict(
        cores=1, memory_mb=512, disk_gb=10, template_id=tpl.id, target_node="pve1",
        target_storage="local-lvm"))[0]
    return Service.create(id=sid, client_id=1, product_id=prod.id, template_id=tpl.id,
                          email="d@example.com", hostname=f"h{sid}.example.com",
                          status="ready", **fields)


def _stored(key: str, n: int) -> dict[int, str]:
    """``n`` services and a DNS provider encrypted under ``key``: service id -> password."""
    passwords = {}
    for sid in range(3001, 3001 + n):
        passwords[sid] = f"pw-{sid}"
        _service(sid, password_enc=secrets.encrypt(key, passwords[sid]))
    DnsProvider.create(name="pdns", kind="powerdns",
                       settings_enc=secrets.encrypt(key, '{"api_key": "k"}'))
    return passwords


def _password(key: str, svc: Service) -> str:
    """The service's password decrypted with the key file ``key``."""
    assert svc.password_enc is not None, f"service {svc.id} stores no password"
    return secrets.decrypt(key, svc.password_enc)


def _readable_by(key_bytes: bytes, token) -> bool:
    try:
        Fernet(key_bytes).decrypt(bytes(token))
        return True
    except InvalidToken:
        return False


def test_rotation_re_encrypts_everything_and_drops_the_old_key(clean_db, database_url,
                                                               tmp_path):
    key = str(tmp_path / "secret.key")
    secrets.create_key(key)
    old = secrets.read_keys(key)[0]
    passwords = _stored(key, 7)
    # a long-running worker has read the old key file (cached) before the rotation
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "DATABASE_URL": database_url})
    try:
        assert _ask(worker, f"read {key} 3001") == "pw-3001"
        report = keyrotate.rotate(clean_db, key, drop_old=True, batch=3)
        assert report.rewritten == 8 and report.keys_after == 1 and not report.unreadable
        new = secrets.read_keys(key)
        assert new != [old] and len(new) == 1
        for svc in Service.select():
            assert _readable_by(new[0], svc.password_enc)
            assert not _readable_by(old, svc.password_enc)
            assert _password(key, svc) == passwords[svc.id]
        assert _readable_by(new[0], DnsProvider.get().settings_enc)
        # the same worker process, without a restart, reads and writes under the new key
        assert _ask(worker, f"read {key} 3005") == "pw-3005"
        token = _ask(worker, f"write {key} fresh")
        assert _readable_by(new[0], token.encode())
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(30)


def test_a_rotation_that_crashes_after_a_batch_loses_nothing(clean_db, tmp_path):
    key = str(tmp_path / "secret.key")
    secrets.create_key(key)
    passwords = _stored(key, 5)

    def crash() -> None:
        raise RuntimeError("killed mid-rotation")

    with pytest.raises(RuntimeError):
        keyrotate.rotate(clean_db, key, drop_old=True, batch=2, after_batch=crash)
    keys = secrets.read_keys(key)
    assert len(keys) == 2  # the new key was written first, the old one kept
    rows = list(Service.select().order_by(Service.id))
    assert sum(_readable_by(keys[0], r.password_enc) for r in rows) == 2  # the first batch
    assert {r.id: _password(key, r) for r in rows} == passwords
    # the re-run finishes under the newest key without adding one, then drops the old
    report = keyrotate.rotate(clean_db, key, new_key=False, drop_old=True, batch=2)
    assert report.rewritten == 4 and report.keys_after == 1
    assert secrets.read_keys(key) == keys[:1]
    assert {r.id: _password(key, r) for r in Service.select()} == passwords


def test_old_keys_stay_while_a_value_no_key_reads_is_stored(clean_db, tmp_path):
    key = str(tmp_path / "secret.key")
    secrets.create_key(key)
    _stored(key, 1)
    _service(3100, password_enc=Fernet(Fernet.generate_key()).encrypt(b"foreign"))
    report = keyrotate.rotate(clean_db, key, drop_old=True)
    assert report.unreadable == ["services.3100"] and report.keys_after == 2
    assert _password(key, Service.get_by_id(3001)) == "pw-3001"


WORKER = """
import sys
from pvekvm import secrets
from pvekvm.db import bind
from pvekvm.models import Service
import os
bind(os.environ["DATABASE_URL"])
for line in sys.stdin:
    verb, key, arg = line.split()
    if verb == "read":
        print(secrets.decrypt(key, Service.get_by_id(int(arg)).password_enc), flush=True)
    else:
        print(secrets.encrypt(key, arg).decode(), flush=True)
"""


def _ask(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None  # started with PIPEs
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()



def test_several_hosts_add_the_key_everywhere_before_it_is_used(clean_db, tmp_path):
    here, other = str(tmp_path / "here.key"), str(tmp_path / "other.key")
    secrets.create_key(here)
    passwords = _stored(here, 2)
    assert keyrotate.add_key(here) == 2
    new = secrets.read_keys(here)[-1]
    assert not _readable_by(new, secrets.encrypt(here, "still the old key"))
    Path(other).write_bytes(Path(here).read_bytes())  # the operator copies the file
    report = keyrotate.rotate(clean_db, here, promote=True)
    assert secrets.read_keys(here)[0] == new and report.keys_after == 2
    for svc in Service.select():  # the other host, with the copied file, reads every value
        assert _readable_by(new, svc.password_enc)
        assert _password(other, svc) == passwords[svc.id]
