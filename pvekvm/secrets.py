"""Secrets at rest: Fernet (AES-128-CBC + HMAC) under the keys of one key file.

Key file: one Fernet key per line, newest first (:class:`~cryptography.fernet.MultiFernet`):
encrypt uses the newest, decrypt tries each. It is created only on purpose (:func:`create_key`:
``init-db``, ``init-key``, or a process's start-up check on a database that holds no encrypted
value, see :mod:`pvekvm.preflight`); encrypting or decrypting with a missing file raises
:class:`KeyFileMissing` instead of inventing a key nobody else has. Every call looks at the
file's identity (inode, mtime, size), so a running process picks up a rotated file
(:mod:`pvekvm.keyrotate`) on its next call without a restart.
"""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PASSWORD_ALPHABET = string.ascii_letters + string.digits
SETTING = "[secrets] key_file / PVEKVM_SECRET_KEY_FILE"


class KeyFileMissing(RuntimeError):
    """The configured key file does not exist (a wrong path, or a volume not mounted)."""

    def __init__(self, key_file: str) -> None:
        super().__init__(f"secret key file {key_file} does not exist ({SETTING}); "
                         "point the setting at the key file the data was encrypted with, or "
                         "create one with `python -m pvekvm init-key` on a new database")


def read_keys(key_file: str) -> list[bytes]:
    """The keys in the file, newest first."""
    try:
        text = Path(key_file).read_bytes()
    except FileNotFoundError:
        raise KeyFileMissing(key_file) from None
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"secret key file {key_file} holds no key ({SETTING})")
    return keys


def write_keys(key_file: str, keys: list[bytes]) -> None:
    """Replace the file's keys atomically (readers see the old file or the new, never half)."""
    for k in keys:
        Fernet(k)  # a malformed key is refused before anything is written
    path = Path(key_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(k + b"\n" for k in keys))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def create_key(key_file: str) -> bool:
    """Create the key file with one new key unless it exists (atomic: of processes racing,
    one wins and all use its key). True when this call created it."""
    path = Path(key_file)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # fails if another process won the race: use theirs
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _identity(key_file: str) -> tuple[int, int, int]:
    try:
        st = os.stat(key_file)
    except FileNotFoundError:
        raise KeyFileMissing(key_file) from None
    return st.st_ino, st.st_mtime_ns, st.st_size


@lru_cache(maxsize=16)
def _fernet_of(key_file: str, identity: tuple[int, int, int]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in read_keys(key_file)])


def keyring(key_file: str) -> MultiFernet:
    """The file's keys as they are now (cached per version of the file)."""
    return _fernet_of(key_file, _identity(key_file))


def encrypt(key_file: str, plaintext: str) -> bytes:
    return keyring(key_file).encrypt(plaintext.encode())


class KeyMismatch(RuntimeError):
    """A stored value no key in the key file decrypts (another host's file, or one from before
    a rotation dropped the key it needs)."""

    def __init__(self, key_file: str) -> None:
        super().__init__(f"no key in {key_file} ({SETTING}) decrypts a stored value: the file "
                         "is not the one the data was encrypted with (copy the engine's key "
                         "file here)")


def decrypt(key_file: str, token: bytes) -> str:
    """The clear text of ``token``; :class:`KeyFileMissing` or :class:`KeyMismatch` when the key
    file cannot give it."""
    try:
        return keyring(key_file).decrypt(bytes(token)).decode()
    except InvalidToken:
        # the file may have been replaced within the same mtime tick: read it again once
        _fernet_of.cache_clear()
        try:
            return keyring(key_file).decrypt(bytes(token)).decode()
        except InvalidToken:
            raise KeyMismatch(key_file) from None


def generate_password(length: int = 16) -> str:
    """A random password with at least one lower, upper and digit (cloud-init friendly)."""
    while True:
        pw = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
        if any(c.islower() for c in pw) and any(c.isupper() for c in pw) and any(
                c.isdigit() for c in pw):
            return pw
