"""What Galera requires of the schema and of the database URL, checked without a cluster:
every table has a primary key (Galera certifies and applies rows by key; a table without one
is refused on the test cluster's nodes, innodb_force_primary_key), the URL form that names a
cluster's nodes, and the one classifier every caller asks about database errors."""

from __future__ import annotations

import re

import pymysql
import pytest
from peewee import InterfaceError, OperationalError

from pvekvm import db as dbmod
from pvekvm.dberrors import DbError, classify, retry_now, unreachable
from pvekvm.dburl import parse_url


def test_every_table_in_schema_sql_and_the_migrations_has_a_primary_key(database):
    """schema.sql's text, and the tables the database holds after it and every migration."""
    for stmt in dbmod.schema_statements():
        m = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?`?(\w+)`?", stmt, re.I)
        if m:
            assert re.search(r"\bPRIMARY KEY\b", stmt, re.I), \
                f"schema.sql: table {m.group(1)} has no PRIMARY KEY (Galera needs one)"
    missing = database.execute_sql(
        "SELECT t.table_name FROM information_schema.tables t "
        "LEFT JOIN information_schema.table_constraints c ON c.table_schema = t.table_schema "
        "AND c.table_name = t.table_name AND c.constraint_type = 'PRIMARY KEY' "
        "WHERE t.table_schema = DATABASE() AND t.table_type = 'BASE TABLE' "
        "AND c.constraint_name IS NULL").fetchall()
    assert not missing, f"tables without a primary key: {missing}"
    engines = database.execute_sql(
        "SELECT table_name, engine FROM information_schema.tables WHERE table_schema = "
        "DATABASE() AND table_type = 'BASE TABLE' AND engine <> 'InnoDB'").fetchall()
    assert not engines, f"Galera replicates InnoDB only: {engines}"


def test_a_url_names_one_server_or_a_clusters_nodes_in_order():
    one = parse_url("mysql://pvekvm:s%40cret@db.example.net/pvekvm")
    assert (one.nodes, one.user, one.password, one.name) == \
        ((("db.example.net", 3306),), "pvekvm", "s@cret", "pvekvm")
    three = parse_url("mysql://pvekvm:pw@db1:3307,db2,[2001:db8::3]:3308/pvekvm")
    assert three.nodes == (("db1", 3307), ("db2", 3306), ("2001:db8::3", 3308))
    assert dbmod.database_name("mysql://root@a:1,b:2/x") == "x"
    assert dbmod.redact("mysql://u:pw@a:1,b:2/x") == "mysql://u:***@a:1,b:2/x"
    for bad in ("mysql://root@a:1,b:port/x", "mysql://root@a:99999/x", "postgres://a/x"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_one_classifier_says_what_each_database_error_means():
    assert classify(OperationalError(1213, "Deadlock found")) is DbError.DEADLOCK
    assert classify(pymysql.err.OperationalError(1205, "Lock wait timeout")) \
        is DbError.LOCK_BUSY
    assert classify(OperationalError(3572, "NOWAIT")) is DbError.LOCK_BUSY
    for code in (1047, 1180, 2003, 2006, 2013, 1053, 1927):
        assert unreachable(OperationalError(code, "x")), code
    assert unreachable(InterfaceError(0, ""))
    assert classify(OperationalError(1062, "Duplicate entry")) is DbError.OTHER
    assert classify(ValueError("x")) is DbError.OTHER and classify(None) is DbError.OTHER
    # a certification conflict inside a nested atomic(): the savepoint is gone as well
    try:
        try:
            raise OperationalError(1213, "Deadlock: wsrep aborted transaction")
        except OperationalError:
            raise OperationalError(1305, "SAVEPOINT s1 does not exist") from None
    except OperationalError as exc:
        assert retry_now(exc)
