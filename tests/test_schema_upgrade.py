"""Applying schema.sql again upgrades a database created by an older release."""

from __future__ import annotations

from pvekvm import db as dbmod


def _columns(database, table: str) -> set[str]:
    rows = database.execute_sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s", (table,)).fetchall()
    return {name for (name,) in rows}


def test_a_services_table_without_language_gains_it(database):
    database.execute_sql("ALTER TABLE services DROP COLUMN language")
    try:
        assert "language" not in _columns(database, "services")
        dbmod.apply_schema(database)
        dbmod.apply_schema(database)  # and again: idempotent
        assert "language" in _columns(database, "services")
    finally:  # whatever happened, later tests get the column back
        database.execute_sql("ALTER TABLE services ADD COLUMN IF NOT EXISTS "
                             "language VARCHAR(35) NULL AFTER want_ipv6")
