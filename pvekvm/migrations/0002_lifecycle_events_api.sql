-- Columns and indexes added after version 1 (new tables come from schema.sql itself, which
-- is applied before the migrations). Idempotent: MariaDB's IF NOT EXISTS throughout.
ALTER TABLE products ADD COLUMN IF NOT EXISTS dhcp TINYINT(1) NOT NULL DEFAULT 0 AFTER vlan;
-- before version 2 a product without pools was the DHCP product
UPDATE products SET dhcp = 1 WHERE ip_pool_id IS NULL AND ip6_pool_id IS NULL;
ALTER TABLE products ADD COLUMN IF NOT EXISTS linked_clone TINYINT(1) NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN IF NOT EXISTS suspended TINYINT(1) NOT NULL DEFAULT 0 AFTER want_ipv6;
ALTER TABLE services ADD COLUMN IF NOT EXISTS boot_before_iso VARCHAR(255) NULL AFTER suspended;
ALTER TABLE services ADD COLUMN IF NOT EXISTS language VARCHAR(35) NULL AFTER boot_before_iso;
UPDATE services SET suspended = 1 WHERE status = 'suspended';
ALTER TABLE services ADD COLUMN IF NOT EXISTS live_hostname VARCHAR(253)
  GENERATED ALWAYS AS (IF(status = 'terminated', NULL, hostname)) STORED;
ALTER TABLE services ADD UNIQUE KEY IF NOT EXISTS uq_services_live_hostname (live_hostname);
ALTER TABLE services ADD KEY IF NOT EXISTS ix_services_hostname (hostname);
ALTER TABLE operations ADD COLUMN IF NOT EXISTS request_hash CHAR(64) NULL AFTER idempotency_key;
ALTER TABLE operations ADD COLUMN IF NOT EXISTS prior_status VARCHAR(16) NULL AFTER status;
ALTER TABLE backups ADD COLUMN IF NOT EXISTS template_id INT UNSIGNED NULL;
ALTER TABLE backups ADD COLUMN IF NOT EXISTS username VARCHAR(32) NULL;
ALTER TABLE backups ADD COLUMN IF NOT EXISTS password_enc VARBINARY(512) NULL;
ALTER TABLE dns_records ADD COLUMN IF NOT EXISTS held_by INT UNSIGNED NULL;
ALTER TABLE dns_records ADD KEY IF NOT EXISTS ix_dns_records_name (name);
