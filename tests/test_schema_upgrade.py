"""A database of an older release is brought up to date by ``init-db`` (apply_schema): the
numbered migrations add what schema.sql's CREATE TABLE IF NOT EXISTS cannot."""

from __future__ import annotations

from pvekvm import db as dbmod

ADDED_IN_2 = {  # table -> columns migration 0002 adds
    "products": ["dhcp", "linked_clone"],
    "services": ["live_hostname", "language", "boot_before_iso", "suspended"],
    "operations": ["request_hash", "prior_status"],
    "backups": ["template_id", "username", "password_enc"],
    "dns_records": ["held_by"],
}
ADDED_IN_3 = {"ip_addresses": ["ptr"]}  # migration 0003 (client reverse DNS)
ADDED_IN_4 = {"products": ["traffic_quota_gb", "overage_rate_mbps"],  # 0004 (traffic overage)
              "services": ["throttled_period"]}
ADDED_IN_5 = {"ip_addresses": ["slot", "prefixlen"], "ip_pools": ["assign"],  # 0005: extra
              "products": ["extra_ipv4"]}                                  # IPv4, prefixes
ADDED_IN_8 = {"products": ["rdns_policy"]}  # 0008: client reverse DNS policy per product
ADDED_IN_9 = {"operations": ["paused_at", "paused_since", "auto_resumes",  # 0009: auto-resume
                             "auto_resume_at", "pause_dependency"]}
ADDED_IN_10 = {"outbox": ["seq"]}  # 0010: the feed position (webhooks and the pull feed)
ADDED_IN_11 = {"backups": ["operation_id"]}  # 0011: the operation that made a backup
ADDED_IN_22 = {"products": ["nodes", "node_group"],  # 0022: placement by headroom
               "placements": ["why"]}
ADDED_IN_24 = {"services": ["rescue_before"]}  # 0024: rescue mode (and product_templates)
ADDED_IN_23 = {"templates": ["os_type", "ostype"],  # 0023: SSH keys, Windows templates
               "products": ["ssh_pwauth", "cicustom"], "services": ["ssh_keys"]}
ADDED_IN_25 = {"products": ["cpu_type", "cpulimit", "cpuunits", "balloon_mb",  # 0025: package
                            "disk_mbps_rd_max", "disk_mbps_wr_max", "disk_iops_rd_max",  # details,
                            "disk_iops_wr_max", "add_disk_mbps_rd_max",  # client firewall cap
                            "add_disk_mbps_wr_max", "add_disk_iops_rd_max",
                            "add_disk_iops_wr_max", "client_fw_rules"]}


def _columns(database, table: str) -> set[str]:
    rows = database.execute_sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s", (table,)).fetchall()
    return {name for (name,) in rows}


def test_a_version_1_database_gains_what_version_2_added(database):
    database.execute_sql("ALTER TABLE services DROP INDEX uq_services_live_hostname")
    database.execute_sql("DELETE FROM ip_addresses WHERE slot > 0")  # an old one held no extras
    database.execute_sql("ALTER TABLE ip_addresses DROP INDEX uq_ip_addresses_slot, ADD UNIQUE "
                         "KEY uq_ip_addresses_holder (service_id, version)")
    for table, columns in (*ADDED_IN_2.items(), *ADDED_IN_3.items(), *ADDED_IN_4.items(),
                           *ADDED_IN_5.items(), *ADDED_IN_8.items(),
                           *ADDED_IN_9.items(), *ADDED_IN_10.items(), *ADDED_IN_11.items(),
                           *ADDED_IN_22.items(), *ADDED_IN_23.items(), *ADDED_IN_24.items(),
                           *ADDED_IN_25.items()):
        for column in columns:
            database.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    database.execute_sql("ALTER TABLE operations DROP INDEX ix_operations_auto_resume")
    database.execute_sql("ALTER TABLE operations DROP INDEX ix_operations_service_status, "
                         "ADD KEY ix_operations_service (service_id)")
    database.execute_sql("DROP TABLE client_tokens")  # 0007 (client tokens, stored hashed)
    database.execute_sql("DROP TABLE product_templates")  # 0024 (the OS picker's offers)
    database.execute_sql("DROP TABLE client_firewall_rules")  # 0025 (the client's own rules)
    database.execute_sql("DROP TABLE task_claims")  # 0018: clone slots became task slots
    database.execute_sql("DROP TABLE task_slots")
    database.execute_sql("DROP TABLE reservations")  # 0022: placement reservations
    database.execute_sql("CREATE TABLE clone_slots (slot VARCHAR(130) NOT NULL PRIMARY KEY)")
    database.execute_sql("CREATE TABLE clone_claims (operation_id BIGINT UNSIGNED NOT NULL "
                         "PRIMARY KEY, slot VARCHAR(130) NOT NULL)")
    database.execute_sql("INSERT INTO clone_claims VALUES (77, 'pve1/local-lvm')")
    database.execute_sql("DELETE FROM schema_version")
    database.execute_sql("INSERT INTO schema_version (version, name) VALUES (1, 'baseline')")
    database.execute_sql("INSERT INTO outbox (event_id, type, body) VALUES (%s, 'x', '{}')",
                         ("upgrade-0010",))  # an event of the older release
    try:
        assert "suspended" not in _columns(database, "services")
        assert dbmod.apply_schema(database) == dbmod.latest_version() >= 2
        assert dbmod.apply_schema(database) == dbmod.latest_version()  # again: nothing to do
        for table, columns in (*ADDED_IN_2.items(), *ADDED_IN_3.items(), *ADDED_IN_4.items(),
                               *ADDED_IN_5.items(), *ADDED_IN_8.items(),
                           *ADDED_IN_9.items(), *ADDED_IN_10.items(), *ADDED_IN_11.items(),
                           *ADDED_IN_22.items(), *ADDED_IN_23.items(), *ADDED_IN_24.items(),
                           *ADDED_IN_25.items()):
            assert set(columns) <= _columns(database, table), table
        tables = set(database.get_tables())
        assert {"task_slots", "task_claims"} <= tables and not tables & {"clone_slots",
                                                                         "clone_claims"}
        assert database.execute_sql("SELECT operation_id, slot FROM task_claims").fetchall() == (
            (77, "pve1/local-lvm"),)
        indexes = {i.name for i in database.get_indexes("services")}
        assert {"uq_services_live_hostname", "ix_services_hostname"} <= indexes
        slots = {i.name: i.columns for i in database.get_indexes("ip_addresses")}
        assert slots.get("uq_ip_addresses_slot") == ["service_id", "version", "slot"]
        assert "uq_ip_addresses_holder" not in slots  # a service may hold several IPv4
        ops = {i.name: i.columns for i in database.get_indexes("operations")}  # 0006
        assert ops.get("ix_operations_service_status") == ["service_id", "status", "id"]
        assert "ix_operations_service" not in ops
        assert ops.get("ix_operations_auto_resume") == ["status", "auto_resume_at"]  # 0009
        assert "client_tokens" in database.get_tables()  # 0007
        assert "reservations" in database.get_tables()  # 0022
        assert "product_templates" in database.get_tables()  # 0024
        assert "client_firewall_rules" in database.get_tables()  # 0025
        (seq, row_id), = database.execute_sql(  # 0010: older events get a feed position
            "SELECT seq, id FROM outbox WHERE event_id = 'upgrade-0010'").fetchall()
        assert seq == row_id
        assert {"uq_outbox_seq"} <= {i.name for i in database.get_indexes("outbox")}
        assert dbmod.latest_version() >= 7
    finally:  # whatever happened, later tests get the latest schema back
        database.execute_sql("DELETE FROM outbox WHERE event_id = 'upgrade-0010'")
        database.execute_sql("DELETE FROM schema_version WHERE version > 1")
        database.execute_sql("DELETE FROM schema_version WHERE version = 1")
        database.execute_sql("INSERT INTO schema_version (version, name) VALUES (1, 'baseline')")
        dbmod.apply_schema(database)


CLUSTER_COLUMNS = ("templates", "ip_pools", "products", "services", "nodes", "placements")


def test_a_version_20_installation_is_put_in_one_cluster_named_default(database):
    """0021: what an installation of today holds (templates, pools, products, services, nodes
    in maintenance, placements) lands in the cluster `[proxmox]` is, "default"; node names
    may then repeat across clusters."""
    dbmod.reset_data(database)
    database.execute_sql("DROP TABLE product_locations")
    for table in CLUSTER_COLUMNS:
        if table == "services":
            database.execute_sql("ALTER TABLE services DROP INDEX ix_services_cluster")
        if table == "placements":
            database.execute_sql("ALTER TABLE placements DROP INDEX ix_placements_node, "
                                 "ADD KEY ix_placements_node (node, operation_id)")
        if table == "nodes":
            database.execute_sql("ALTER TABLE nodes DROP PRIMARY KEY, DROP COLUMN cluster, "
                                 "ADD PRIMARY KEY (name)")
            continue
        database.execute_sql(f"ALTER TABLE {table} DROP COLUMN cluster")
    database.execute_sql("DELETE FROM schema_version")
    database.execute_sql("INSERT INTO schema_version (version, name) VALUES (20, 'nodes')")
    sql = database.execute_sql
    sql("INSERT INTO templates (id, name, vmid, node) VALUES (1, 'debian-12', 9000, 'pve1')")
    sql("INSERT INTO ip_pools (id, name, version, network, gateway) "
        "VALUES (1, 'v4', 4, '192.0.2.0/24', '192.0.2.1')")
    sql("INSERT INTO products (id, name, cores, memory_mb, disk_gb, template_id, target_node, "
        "target_storage, ip_pool_id) VALUES (1, 'vps', 1, 512, 10, 1, 'pve1', 'local-lvm', 1)")
    sql("INSERT INTO services (id, client_id, product_id, template_id, email, hostname, vmid) "
        "VALUES (7, 1, 1, 1, 'a@example.com', 'a.example.com', 1000)")
    sql("INSERT INTO nodes (name, maintenance) VALUES ('pve1', 1)")
    sql("INSERT INTO placements (operation_id, service_id, node) VALUES (3, 7, 'pve2')")
    try:
        assert dbmod.apply_schema(database) == dbmod.latest_version() >= 21
        assert dbmod.apply_schema(database) == dbmod.latest_version()  # again: nothing to do
        for table in CLUSTER_COLUMNS:
            assert sql(f"SELECT DISTINCT cluster FROM {table}").fetchall() == (("default",),), \
                table
        assert "product_locations" in database.get_tables()
        sql("INSERT INTO nodes (cluster, name, maintenance) VALUES ('ams', 'pve1', 0)")
        assert sql("SELECT cluster, maintenance FROM nodes WHERE name = 'pve1' "
                   "ORDER BY cluster").fetchall() == (("ams", 0), ("default", 1))
        placements = {i.name: i.columns for i in database.get_indexes("placements")}
        assert placements["ix_placements_node"] == ["cluster", "node", "operation_id"]
    finally:
        dbmod.reset_data(database)
        sql("DELETE FROM schema_version")
        sql("INSERT INTO schema_version (version, name) VALUES (1, 'baseline')")
        dbmod.apply_schema(database)
