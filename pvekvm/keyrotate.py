"""Key rotation for the values encrypted at rest (``python -m pvekvm rotate-keys``).

Loses nothing, whenever it stops: the new key is written to the key file (newest first)
before any row is rewritten, and old keys stay in the file until a pass finds no row that
needs them. Rows are re-encrypted under the newest key in short transactions of ``batch``
rows (``SELECT ... FOR UPDATE``), so a crash between batches leaves every row readable with
the keys in the file and a re-run (``--keep-key``) finishes the job. Running processes pick
the new file up on their next encrypt/decrypt (:mod:`pvekvm.secrets` looks at the file's
identity on every call); a value a process wrote with an older key meanwhile is caught by
the drop pass, which re-encrypts again with the old keys held in memory after the file no
longer has them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import peewee
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from pvekvm import secrets

#: every column holding a Fernet token (grep ``secrets.encrypt`` when adding one)
ENCRYPTED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("services", "password_enc"),
    ("backups", "password_enc"),
    ("dns_providers", "settings_enc"),
    ("webhook_endpoints", "secrets_enc"),
)
NO_SUCH_TABLE = 1146


@dataclass
class Rotation:
    keys_before: int = 0
    keys_after: int = 0
    rewritten: int = 0
    unreadable: list[str] = field(default_factory=list)  # "table.id": no key decrypts it

    def summary(self) -> str:
        line = (f"keys {self.keys_before} -> {self.keys_after}; "
                f"{self.rewritten} values re-encrypted under the newest key")
        if self.unreadable:
            line += (f"; {len(self.unreadable)} values no key decrypts (old keys kept): "
                     + ", ".join(self.unreadable[:20]))
        return line


def encrypted_values(db: peewee.Database) -> int:
    """How many encrypted values the database holds (0 before the schema exists)."""
    total = 0
    for table, column in ENCRYPTED_COLUMNS:
        try:
            total += db.execute_sql(
                f"SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL").fetchone()[0]
        except peewee.ProgrammingError as exc:
            if exc.args[0] != NO_SUCH_TABLE:
                raise
    return total


def _pass(db: peewee.Database, ring: MultiFernet, newest: Fernet, batch: int, report: Rotation,
          after_batch: Callable[[], None] | None) -> None:
    """Re-encrypt, under ``newest``, every value ``newest`` cannot decrypt."""
    for table, column in ENCRYPTED_COLUMNS:
        last = 0
        while True:
            with db.atomic():
                rows = db.execute_sql(
                    f"SELECT id, {column} FROM {table} WHERE id > %s AND {column} IS NOT NULL "
                    f"ORDER BY id LIMIT %s FOR UPDATE", (last, batch)).fetchall()
                for row_id, token in rows:
                    token = bytes(token)
                    try:
                        newest.decrypt(token)
                        continue
                    except InvalidToken:
                        pass
                    try:
                        fresh = ring.rotate(token)
                    except InvalidToken:
                        report.unreadable.append(f"{table}.{row_id}")
                        continue
                    db.execute_sql(f"UPDATE {table} SET {column} = %s WHERE id = %s",
                                   (fresh, row_id))
                    report.rewritten += 1
            if not rows:
                break
            last = rows[-1][0]
            if after_batch:
                after_batch()


def add_key(key_file: str) -> int:
    """Several hosts: append a new key last (read with, not yet encrypted with), to be copied
    to every host before :func:`rotate` ``promote`` makes it the newest. The key count."""
    keys = [*secrets.read_keys(key_file), Fernet.generate_key()]
    secrets.write_keys(key_file, keys)
    return len(keys)


def rotate(db: peewee.Database, key_file: str, *, new_key: bool = True, promote: bool = False,
           drop_old: bool = False, batch: int = 500,
           after_batch: Callable[[], None] | None = None) -> Rotation:
    """Prepend a new key (unless ``new_key`` is False; ``promote``: move the last key, added
    by :func:`add_key`, first instead), re-encrypt every value under the newest key, and with
    ``drop_old`` leave only the newest key in the file once no value needs the others.
    ``after_batch`` is called after each committed batch (tests)."""
    keys = secrets.read_keys(key_file)
    report = Rotation(keys_before=len(keys))
    if promote:
        keys = [keys[-1], *keys[:-1]]
        secrets.write_keys(key_file, keys)
    elif new_key:
        keys = [Fernet.generate_key(), *keys]
        secrets.write_keys(key_file, keys)
    ring = MultiFernet([Fernet(k) for k in keys])  # held in memory until the end
    newest = Fernet(keys[0])
    _pass(db, ring, newest, batch, report, after_batch)
    if drop_old and len(keys) > 1 and not report.unreadable:
        secrets.write_keys(key_file, keys[:1])
        keys = keys[:1]
        _pass(db, ring, newest, batch, report, None)  # what a process wrote meanwhile
    report.keys_after = len(keys)
    return report
