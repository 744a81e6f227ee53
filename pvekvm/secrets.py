"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with a key file created on first use."""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

PASSWORD_ALPHABET = string.ascii_letters + string.digits


@lru_cache(maxsize=8)
def _fernet(key_file: str) -> Fernet:
    path = Path(key_file)
    if not path.exists():  # first use: publish a complete key file atomically, once
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
            os.link(tmp, path)  # fails if another process won the race: use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return Fernet(path.read_bytes().strip())


def encrypt(key_file: str, plaintext: str) -> bytes:
    return _fernet(key_file).encrypt(plaintext.encode())


def decrypt(key_file: str, token: bytes) -> str:
    return _fernet(key_file).decrypt(bytes(token)).decode()


def generate_password(length: int = 16) -> str:
    """A random password with at least one lower, upper and digit (cloud-init friendly)."""
    while True:
        pw = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
        if any(c.islower() for c in pw) and any(c.isupper() for c in pw) and any(
                c.isdigit() for c in pw):
            return pw
