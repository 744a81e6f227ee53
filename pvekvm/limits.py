"""Ranges and lengths of the values events carry: the one source for the event validator
(pvekvm/wire/orders.py) and the database columns they land in (schema.sql).

tests/test_schema.py reads the live column types and fails when a limit here and its column
disagree, so a value the validator accepts always fits its column."""

from __future__ import annotations

INT_UNSIGNED_MAX = 2**32 - 1
BIGINT_UNSIGNED_MAX = 2**64 - 1

# Unsigned maxima by MySQL integer type, for checking FIELD_RANGES against the schema.
UNSIGNED_MAX: dict[str, int] = {"tinyint": 2**8 - 1, "smallint": 2**16 - 1,
                                "mediumint": 2**24 - 1, "int": INT_UNSIGNED_MAX,
                                "bigint": BIGINT_UNSIGNED_MAX}

# Integer fields: inclusive (min, max).
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "service_id": (1, INT_UNSIGNED_MAX),
    "client_id": (1, INT_UNSIGNED_MAX),
    "backup_id": (1, INT_UNSIGNED_MAX),
}

# String fields: maximum length in characters.
FIELD_LENGTHS: dict[str, int] = {
    "idempotency_key": 128,
    "product": 64,
    "template": 64,
    "email": 254,
    "hostname": 253,
    "name": 40,          # snapshot name
    "description": 255,  # snapshot description
    "note": 255,         # backup note
}

MAX_SERVICE_ID = FIELD_RANGES["service_id"][1]      # services.id INT UNSIGNED
MAX_CLIENT_ID = FIELD_RANGES["client_id"][1]        # services.client_id INT UNSIGNED
MAX_OPERATION_ID = BIGINT_UNSIGNED_MAX              # operations.id BIGINT UNSIGNED
MAX_VMID = 999_999_999                              # PVE's VMID range is 100..999999999

# Where each field is stored: (table, column).
FIELD_COLUMNS: dict[str, tuple[str, str]] = {
    "service_id": ("services", "id"),
    "client_id": ("services", "client_id"),
    "backup_id": ("backups", "id"),
    "idempotency_key": ("operations", "idempotency_key"),
    "product": ("products", "name"),
    "template": ("templates", "name"),
    "email": ("services", "email"),
    "hostname": ("services", "hostname"),
    "name": ("snapshots", "name"),
    "description": ("snapshots", "description"),
    "note": ("backups", "note"),
}

# The longest integer literal an event may contain (digits, sign excluded): far above any id,
# far below Python's 4300-digit int-parsing limit.
MAX_INT_DIGITS = 20
