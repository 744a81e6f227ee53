"""schema.sql is the truth; the peewee models must describe exactly the same tables."""

from __future__ import annotations

import pytest
from peewee import IntegrityError

from producers.events import EVENT_TYPES, InvalidEvent
from pvekvm import db as dbmod
from pvekvm.limits import FIELD_COLUMNS, FIELD_LENGTHS, FIELD_RANGES, UNSIGNED_MAX
from pvekvm.models import ALL_MODELS, IpAddress, IpPool, Operation, Product, Service, Template

INT_TYPES = {"int", "bigint", "smallint", "tinyint", "mediumint"}


def _db_columns(database, table: str) -> dict[str, tuple[str, bool]]:
    """Stored columns; generated ones (computed by the database, e.g. an index helper) are not
    mapped by the models."""
    rows = database.execute_sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s "
        "AND extra NOT LIKE '%%GENERATED%%'", (table,)).fetchall()
    return {name: (dtype, nullable == "YES") for name, dtype, nullable in rows}


def _family(sql_type: str) -> str:
    sql_type = sql_type.lower()
    if sql_type in INT_TYPES or sql_type in ("integer", "bool", "boolean", "auto", "bigauto"):
        return "int"
    if sql_type in ("varchar", "char", "text", "mediumtext", "longtext"):
        return "text"
    if sql_type in ("blob", "varbinary", "mediumblob", "longblob"):
        return "blob"
    if sql_type in ("datetime", "timestamp"):
        return "datetime"
    if sql_type in ("decimal", "numeric"):
        return "decimal"
    return sql_type


def test_every_table_has_a_model_and_every_model_a_table(database):
    tables = set(database.get_tables())
    models = {m._meta.table_name for m in ALL_MODELS}
    assert tables == models


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_model_columns_match_schema(database, model):
    cols = _db_columns(database, model._meta.table_name)
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    assert set(fields) == set(cols), f"{model.__name__}: columns differ"
    for name, field in fields.items():
        dtype, nullable = cols[name]
        assert _family(field.field_type) == _family(dtype), f"{model.__name__}.{name} type"
        if not field.primary_key:
            # A model field may accept NULL for columns the server fills by DEFAULT.
            assert nullable <= field.null, f"{model.__name__}.{name}: NULL allowed in DB only"


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_model_unique_fields_are_unique_in_schema(database, model):
    idx = database.get_indexes(model._meta.table_name)
    single_unique = {i.columns[0] for i in idx if i.unique and len(i.columns) == 1}
    for field in model._meta.sorted_fields:
        if field.unique:
            assert field.column_name in single_unique, f"{model.__name__}.{field.name}"


@pytest.mark.parametrize("field", sorted(FIELD_COLUMNS))
def test_event_limits_match_their_columns(database, field):
    """pvekvm.limits is the one source for the validator's ranges: each must be exactly what
    its column holds, so an event intake accepts always fits the database."""
    table, column = FIELD_COLUMNS[field]
    data_type, column_type, max_chars = database.execute_sql(
        "SELECT data_type, column_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = %s AND column_name = %s",
        (table, column)).fetchone()
    if field in FIELD_RANGES:
        assert "unsigned" in column_type, column_type
        assert FIELD_RANGES[field] == (1, UNSIGNED_MAX[data_type]), (table, column)
    else:
        assert FIELD_LENGTHS[field] == max_chars, (table, column)


@pytest.mark.parametrize("field", sorted(FIELD_RANGES))
def test_the_validator_applies_the_limits(field):
    """Every event type with the field refuses one past the limit and accepts the limit."""
    low, high = FIELD_RANGES[field]
    types = [cls for cls in EVENT_TYPES.values() if field in cls.model_fields]
    assert types
    for cls in types:
        base = {"service_id": 1, "client_id": 1, "product": "p", "email": "a@b.example",
                "backup_id": 1, "days": [], "name": "snap1", "iso": "a.iso",
                "action": "start", "address": "192.0.2.1", "hostname": "h.example.com",
                "language": "de", "rules": []}
        kwargs = {k: v for k, v in base.items() if k in cls.model_fields}
        assert getattr(cls(**{**kwargs, field: high}), field) == high
        for bad in (low - 1, high + 1):
            with pytest.raises(InvalidEvent, match=f"field '{field}': out of range"):
                cls(**{**kwargs, field: bad})


def test_schema_applies_twice(database):
    dbmod.apply_schema(database)  # idempotent: CREATE TABLE IF NOT EXISTS everywhere


def _product(clean_db) -> tuple[Product, IpPool]:
    tpl = Template.create(name="debian-12", vmid=9000, node="pve1")
    pool = IpPool.create(name="v4", version=4, network="192.0.2.0/24", gateway="192.0.2.1")
    prod = Product.create(name="small", cores=1, memory_mb=1024, disk_gb=10, template_id=tpl.id,
                          target_node="pve2", target_storage="local-lvm", ip_pool_id=pool.id)
    return prod, pool


def _service(sid: int, prod: Product, vmid: int | None = None) -> Service:
    return Service.create(id=sid, client_id=1, product_id=prod.id, template_id=prod.template_id,
                          email="c@example.com", hostname=f"vps-1-{sid}", vmid=vmid)


def test_a_vmid_cannot_be_given_twice(clean_db):
    prod, _ = _product(clean_db)
    _service(1, prod, vmid=1000)
    with pytest.raises(IntegrityError):
        _service(2, prod, vmid=1000)


def test_an_ip_cannot_be_held_twice(clean_db):
    prod, pool = _product(clean_db)
    IpAddress.create(pool_id=pool.id, address="192.0.2.10", version=4, service_id=1)
    with pytest.raises(IntegrityError):
        IpAddress.create(pool_id=pool.id, address="192.0.2.10", version=4, service_id=2)
    IpAddress.create(pool_id=pool.id, address="192.0.2.11", version=4)
    with pytest.raises(IntegrityError):  # one IPv4 per service
        IpAddress.update(service_id=1).where(IpAddress.address == "192.0.2.11").execute()


def test_one_running_operation_per_service(clean_db):
    Operation.create(service_id=7, kind="deploy", idempotency_key="a", params="{}", state="new",
                     active_service=7)
    with pytest.raises(IntegrityError):
        Operation.create(service_id=7, kind="backup", idempotency_key="b", params="{}",
                         state="new", active_service=7)
    with pytest.raises(IntegrityError):  # the same event twice is one operation
        Operation.create(service_id=8, kind="deploy", idempotency_key="a", params="{}",
                         state="new")


def test_fetch_reads_rows_as_peewee_does(clean_db):
    """The hot path's written-out reads (``BaseModel.fetch``) give what peewee's own query gives
    for every field (types included: booleans, decimals, datetimes, NULLs), and a column that
    is no field as a plain attribute."""
    prod, pool = _product(clean_db)
    svc = _service(5, prod, vmid=1005)
    svc.suspended, svc.want_ipv6 = True, False
    svc.save()
    op = Operation.create(service_id=5, kind="deploy", idempotency_key="k", params="{}",
                          state="new", nudge_delay_s="0.250", nudge_published=True)
    IpAddress.create(pool_id=pool.id, address="192.0.2.10", version=4, service_id=5)
    for model, key, sql in (
            (Service, svc.id, "SELECT s.*, 7 AS op_version FROM services s WHERE id = %s"),
            (Operation, op.id, "SELECT o.*, 7 AS op_version FROM operations o WHERE id = %s"),
            (Product, prod.id, "SELECT p.*, 7 AS op_version FROM products p WHERE id = %s")):
        fetched = model.fetch_one(sql, key)
        expected = model.get_by_id(key)
        assert fetched is not None and fetched.__data__ == expected.__data__
        assert {k: type(v) for k, v in fetched.__data__.items()} == \
            {k: type(v) for k, v in expected.__data__.items()}
        # a field of Operation, a plain attribute of the others (not in their types): getattr
        assert getattr(fetched, "op_version") == 7 and not fetched.is_dirty()  # noqa: B009
    assert [a.address for a in IpAddress.fetch(
        "SELECT * FROM ip_addresses WHERE service_id = %s", 5)] == ["192.0.2.10"]
    assert Service.fetch_one("SELECT * FROM services WHERE id = %s", 404) is None
