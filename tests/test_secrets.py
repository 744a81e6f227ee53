"""Secrets at rest: encrypted with a key file that many processes may create at once."""

from __future__ import annotations

import subprocess
import sys

from pvekvm import secrets


def test_password_round_trips_and_is_not_stored_in_clear(tmp_path):
    key = str(tmp_path / "k")
    token = secrets.encrypt(key, "s3cret-Pass")
    assert b"s3cret" not in token
    assert secrets.decrypt(key, token) == "s3cret-Pass"


def test_processes_racing_to_create_the_key_agree_on_one_key(tmp_path):
    key = tmp_path / "race" / "secret.key"
    code = ("import sys; from pvekvm import secrets; "
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
